"""Unit tests for Stream: hooks, completion, incompleteness, replay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from flowopt import Chunk, Decision, IncompleteStream, Response, Result, pipeline, replay
from flowopt.stream import Stream
from flowopt.testing import FakeBackend
from flowopt.types import Request, TokenLogprob


def _stream(texts: list[str], *, fail_after: int | None = None) -> Stream:
    async def gen() -> AsyncIterator[Chunk]:
        for i, t in enumerate(texts):
            if fail_after is not None and i == fail_after:
                raise IncompleteStream("cut", endpoint="fake://x", partial_text="".join(texts[:i]))
            yield Chunk(t, i, finish_reason="stop" if i == len(texts) - 1 else None)

    return Stream(gen(), lambda: Response(text="".join(texts), model="m"))


async def test_hooks_run_in_registration_order_and_may_replace() -> None:
    s = _stream(["a", "b"])
    order: list[str] = []
    firsts: list[str] = []
    s.on_first_chunk(lambda c: firsts.append(c.text))
    s.on_complete(lambda r: order.append("inner"))
    s.on_complete(lambda r: r.replace(cost=1.5))
    s.on_complete(lambda r: order.append(f"outer cost={r.cost}"))
    s.add_decision(Decision("x", "did"))
    final = await s.collect()
    assert order == ["inner", "outer cost=1.5"]
    assert firsts == ["a"]
    assert final.text == "ab" and final.cost == 1.5 and final.stream is None
    assert [d.action for d in final.decisions] == ["did"]
    assert s.ttft_ms is not None


async def test_cut_stream_never_completes() -> None:
    s = _stream(["a", "b", "c"], fail_after=2)
    completed: list[Response] = []
    errors: list[BaseException] = []
    s.on_complete(completed.append)
    s.on_error(errors.append)
    got = []
    with pytest.raises(IncompleteStream):
        async for c in s:
            got.append(c.text)
    assert got == ["a", "b"]
    assert completed == [] and len(errors) == 1
    assert s.response is None
    with pytest.raises(IncompleteStream):
        await s.collect()


async def test_abandoned_stream_is_reported_incomplete() -> None:
    s = _stream(["a", "b"])
    errors: list[BaseException] = []
    s.on_error(errors.append)
    async with s as chunks:
        async for _ in chunks:
            break
    assert isinstance(errors[0], IncompleteStream)
    assert s.done and s.response is None


async def test_replay_is_byte_identical() -> None:
    original = Response(text="héllo wörld", model="m", finish_reason="stop")
    r = replay(original, chunk_texts=["hél", "lo w", "örld"])
    assert r.is_streaming
    pieces = [c.text async for c in r.stream]  # type: ignore[union-attr]
    assert pieces == ["hél", "lo w", "örld"]
    assert r.stream is not None and r.stream.response is not None
    assert r.stream.response.text.encode() == original.text.encode()
    with pytest.raises(ValueError):
        replay(original, chunk_texts=["nope"])


async def test_replay_measures_latency_and_ttft_from_the_request_start() -> None:
    started = time.perf_counter()
    await asyncio.sleep(0.02)  # the work before the replay: a buffered call, a lookup
    r = replay(Response(text="a b", model="m"), chunk_texts=["a", " b"], started_at=started)
    final = await r.complete()
    assert final.latency_ms is not None and final.ttft_ms is not None
    assert final.latency_ms >= 20 and 20 <= final.ttft_ms <= final.latency_ms


class _ConfidentFake(FakeBackend):
    """A fake that reports a confident logprob on buffered answers (so a cascade accepts
    them) and takes ``delay`` seconds for every answer."""

    async def generate(self, request: Request) -> Response:
        response = await super().generate(request)
        if request.stream:
            return response
        return response.replace(logprobs=(TokenLogprob("ok", -0.01),))


@pytest.mark.parametrize("middleware", [[], ["cache"], ["cache", "cascade"]])
async def test_streamed_hop_carries_real_latency_and_ttft(middleware: list[str]) -> None:
    """The final response of a streamed step has latency and TTFT > 0, TTFT <= latency,
    whether it was streamed live, replayed by the cascade (accepted cheap tier) or
    replayed by the cache (the second, repeated run)."""
    cheap = _ConfidentFake(delay=0.02, name="cheap")
    strong = _ConfidentFake(delay=0.02, name="strong")
    mws: list[object] = []
    for name in middleware:
        if name == "cache":
            mws.append({"cache": {"store": "memory", "semantic": False}})
        else:
            tiers = [{"name": "small", "backend": "default"}, {"name": "large", "backend": "big"}]
            mws.append({"cascade": {"tiers": tiers, "threshold": 0.5}})
    pipe = pipeline(
        "s",
        backend=cheap,
        backends={"big": strong},
        middleware=mws,  # type: ignore[arg-type]
        defaults={"temperature": 0},
        steps=[{"name": "answer", "prompt": "{input}"}],
    )
    try:
        for _ in range(2):
            result = None
            async for ev in pipe.astream("hello there"):
                if isinstance(ev, Result):
                    result = ev
            assert result is not None and len(result.hops) == 1
            final = result.hops[0].response
            assert final.latency_ms is not None and final.ttft_ms is not None, final
            assert final.latency_ms > 0 and 0 < final.ttft_ms <= final.latency_ms
            if not final.cached:
                assert final.latency_ms >= 20  # the fake's delay is inside it
    finally:
        await pipe.aclose()
    if "cascade" in middleware:
        assert len(cheap.calls) == 1 and not strong.calls  # accepted, replayed
