"""Single flight (flowopt.cache._flight): concurrent identical misses reach the engine once.

Unit tests through the real middleware stack; the engine is a fake that counts its calls
and holds every answer until the test opens its gate, so the followers are provably
waiting (the flights report how many) before the leader's answer exists.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from fakes import FakeEmbedder

from flowopt.cache import CacheMiddleware, MemoryStore
from flowopt.errors import BackendUnavailable
from flowopt.middleware.base import PipelineContext, build_stack, traced_backend
from flowopt.testing.fakes import FakeBackend
from flowopt.types import Request, Response

G = {"temperature": 0.0}


class FakeGatedBackend(FakeBackend):
    """A counting fake engine whose answers wait for ``gate`` (an event the test sets)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.gate = asyncio.Event()

    async def generate(self, request: Request) -> Response:
        self.calls.append(request)
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.calls.pop()  # FakeBackend.generate counts again
        return await super().generate(request)


async def stack(backend: Any, **options: Any) -> tuple[Any, CacheMiddleware]:
    mw = CacheMiddleware(
        store=MemoryStore(), embedder=FakeEmbedder(), verify=False, semantic=False, **options
    )
    await mw.setup(PipelineContext("test", backend))
    return build_stack([("cache", mw)], traced_backend(backend, name="fake")), mw


def action(resp: Response) -> str:
    (d,) = [d for d in resp.decisions if d.middleware == "cache"]
    return d.action


async def ask(h: Any, text: str, **kw: Any) -> Response:
    kw.setdefault("params", G)
    resp: Response = await h(Request.chat(text, **kw))
    return await resp.complete()


async def until(cond: Any) -> None:
    """Let the other tasks run until ``cond()`` holds (a condition, not a sleep)."""
    for _ in range(10_000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_100_identical_requests_reach_the_engine_once(spans: Any) -> None:
    backend = FakeGatedBackend()
    h, mw = await stack(backend)
    tasks = [asyncio.ensure_future(ask(h, "What is 2+2?", tenant="t")) for _ in range(100)]
    await until(lambda: mw.flights.waiting() == 99)
    backend.gate.set()
    answers = await asyncio.gather(*tasks)
    assert len(backend.calls) == 1
    assert {a.text for a in answers} == {"echo: What is 2+2?"}
    actions = sorted(action(a) for a in answers)
    assert actions.count("miss") == 1 and actions.count("coalesced") == 99
    assert mw.flights.coalesced == 99
    follower = next(a for a in answers if action(a) == "coalesced")
    assert follower.cached and follower.usage.total_tokens == 0
    coalesced = [
        s for s in spans.by_name("middleware cache") if s.attributes.get("flowopt.cache.coalesced")
    ]
    assert len(coalesced) == 99
    assert action(await ask(h, "What is 2+2?", tenant="t")) == "hit"  # and it was stored


async def test_streamed_followers_get_the_leaders_chunks_replayed() -> None:
    backend = FakeGatedBackend()
    h, mw = await stack(backend)
    leader = asyncio.ensure_future(h(Request.chat("tell me", params=G, stream=True)))
    json_follower = asyncio.ensure_future(ask(h, "tell me"))
    stream_follower = asyncio.ensure_future(h(Request.chat("tell me", params=G, stream=True)))
    await until(lambda: mw.flights.waiting() == 2)
    backend.gate.set()
    lead_chunks = [c.text async for c in (await leader).stream]
    follow = await stream_follower
    assert action(follow) == "coalesced"
    assert [c.text async for c in follow.stream] == lead_chunks == ["echo:", " tell", " me"]
    assert (await json_follower).text == "echo: tell me"
    assert len(backend.calls) == 1


async def test_same_prompt_from_8_tenants_makes_8_calls() -> None:
    backend = FakeGatedBackend()
    h, mw = await stack(backend)
    tasks = [
        asyncio.ensure_future(ask(h, "popular question", tenant=f"t{i}"))
        for i in range(8)
        for _ in range(3)
    ]
    await until(lambda: mw.flights.waiting() == 16)  # 2 followers per tenant
    backend.gate.set()
    answers = await asyncio.gather(*tasks)
    assert len(backend.calls) == 8
    assert sorted({r.tenant for r in backend.calls}) == [f"t{i}" for i in range(8)]
    assert sum(action(a) == "coalesced" for a in answers) == 16


async def test_sampled_requests_never_coalesce() -> None:
    backend = FakeGatedBackend()
    h, mw = await stack(backend)
    tasks = [
        asyncio.ensure_future(ask(h, "write a poem", params={"temperature": 0.9})) for _ in range(5)
    ]
    await until(lambda: len(backend.calls) == 5)
    assert mw.flights.waiting() == 0
    backend.gate.set()
    answers = await asyncio.gather(*tasks)
    assert {action(a) for a in answers} == {"bypass"}


async def test_leader_cancelled_followers_still_answered_by_the_same_call() -> None:
    backend = FakeGatedBackend()
    h, mw = await stack(backend)
    leader = asyncio.ensure_future(ask(h, "q"))
    await until(lambda: len(backend.calls) == 1)
    followers = [asyncio.ensure_future(ask(h, "q")) for _ in range(3)]
    await until(lambda: mw.flights.waiting() == 3)
    leader.cancel()  # its client left
    with pytest.raises(asyncio.CancelledError):
        await leader
    backend.gate.set()
    answers = await asyncio.gather(*followers)
    assert {a.text for a in answers} == {"echo: q"}
    assert {action(a) for a in answers} == {"coalesced"}
    assert len(backend.calls) == 1  # the shared call was not cancelled


async def test_leader_cancelled_without_followers_cancels_the_call() -> None:
    backend = FakeGatedBackend()
    h, mw = await stack(backend)
    leader = asyncio.ensure_future(ask(h, "q"))
    await until(lambda: len(backend.calls) == 1)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    await until(lambda: not mw._orphans)
    backend.gate.set()
    assert action(await ask(h, "q")) == "miss"  # a fresh flight, a fresh call
    assert len(backend.calls) == 2


async def test_abandoned_streamed_leader_hands_over_to_a_follower() -> None:
    backend = FakeGatedBackend()
    h, mw = await stack(backend)
    backend.gate.set()
    leader = await h(Request.chat("q", params=G, stream=True))
    followers = [asyncio.ensure_future(ask(h, "q")) for _ in range(3)]
    await until(lambda: mw.flights.waiting() == 3)
    await leader.stream.aclose()  # the leader's client left mid-stream
    answers = await asyncio.gather(*followers)
    assert {a.text for a in answers} == {"echo: q"}
    assert sorted(action(a) for a in answers) == ["coalesced", "coalesced", "miss"]
    assert len(backend.calls) == 2


async def test_leader_failure_gives_followers_the_same_typed_error() -> None:
    backend = FakeGatedBackend(fail=BackendUnavailable("down", endpoint="fake://down"))
    h, mw = await stack(backend)
    tasks = [asyncio.ensure_future(ask(h, "q")) for _ in range(5)]
    await until(lambda: mw.flights.waiting() == 4)
    backend.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, BackendUnavailable) for r in results)
    assert len(backend.calls) == 1


async def test_follower_calls_the_engine_itself_at_its_deadline() -> None:
    backend = FakeGatedBackend()
    h, _ = await stack(backend)
    leader = asyncio.ensure_future(ask(h, "q"))
    await until(lambda: len(backend.calls) == 1)
    # its deadline already passed: it does not wait for the leader
    late = asyncio.ensure_future(ask(h, "q", deadline=time.monotonic() - 1.0))
    await until(lambda: len(backend.calls) == 2)
    backend.gate.set()
    assert action(await leader) == "miss"
    (d,) = [d for d in (await late).decisions if d.middleware == "cache"]
    assert (d.action, d.detail["coalesce_skipped"]) == ("miss", "timeout")


async def test_unshareable_answer_sends_followers_to_the_engine() -> None:
    backend = FakeGatedBackend(answer=lambda r: "mail me at jane.doe@example.com")
    h, mw = await stack(backend)
    tasks = [asyncio.ensure_future(ask(h, "contact?")) for _ in range(3)]
    await until(lambda: mw.flights.waiting() == 2)
    backend.gate.set()
    answers = await asyncio.gather(*tasks)
    assert len(backend.calls) == 3 and {action(a) for a in answers} == {"miss"}


async def test_single_flight_off() -> None:
    backend = FakeGatedBackend()
    h, mw = await stack(backend, single_flight=False)
    tasks = [asyncio.ensure_future(ask(h, "q")) for _ in range(4)]
    await until(lambda: len(backend.calls) == 4)  # all four reached the engine
    backend.gate.set()
    answers = await asyncio.gather(*tasks)
    assert {action(a) for a in answers} == {"miss"} and mw.flights.coalesced == 0


async def test_streamed_leader_cancelled_before_its_stream_is_drained_for_followers() -> None:
    backend = FakeGatedBackend()
    h, mw = await stack(backend)
    leader = asyncio.ensure_future(h(Request.chat("q", params=G, stream=True)))
    await until(lambda: len(backend.calls) == 1)
    followers = [asyncio.ensure_future(ask(h, "q", stream=True)) for _ in range(2)]
    await until(lambda: mw.flights.waiting() == 2)
    leader.cancel()  # its client left before the stream started
    with pytest.raises(asyncio.CancelledError):
        await leader
    backend.gate.set()  # the shared call answers with a stream nobody reads: drained
    answers = await asyncio.gather(*followers)
    assert {a.text for a in answers} == {"echo: q"}
    assert {action(a) for a in answers} == {"coalesced"}
    assert len(backend.calls) == 1
    await until(lambda: not mw._orphans)
