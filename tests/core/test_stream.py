"""Unit tests for Stream: hooks, completion, incompleteness, replay."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from flowopt import Chunk, Decision, IncompleteStream, Response, replay
from flowopt.stream import Stream


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
