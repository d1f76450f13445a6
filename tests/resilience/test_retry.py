"""Retry through the fault proxy against the real server: what is retried, what is not,
Retry-After, replica fallback, the retry budget, and streams."""

from __future__ import annotations

import pytest

from flowopt.errors import BackendHTTPError, IncompleteStream
from flowopt.resilience import Resilience, Retry
from flowopt.testing import run_middleware_conformance
from flowopt.testing.faultproxy import Fault

from .conftest import chat


async def test_conformance() -> None:
    await run_middleware_conformance(lambda: Retry(seed=1))
    await run_middleware_conformance(lambda: Resilience(retry={"seed": 1}))


async def test_429_with_retry_after_is_retried_after_the_wait(proxy, make_pipe) -> None:
    pipe = make_pipe(proxy.url, [{"retry": {"attempts": 3, "seed": 1}}])
    proxy.schedule(Fault.status(429, retry_after=0.4))
    resp = await pipe.acall(chat())
    assert resp.text and resp.finish_reason in ("stop", "length")
    assert [e.fault for e in proxy.events] == ["status", "ok"]
    # Retry-After is a floor the second send may not undercut
    assert proxy.events[1].at - proxy.events[0].at >= 0.4
    (d,) = [d for d in resp.decisions if d.middleware == "retry"]
    assert d.action == "retried" and d.detail["attempts"] == 2
    assert d.detail["errors"] == ["http 429"]
    await pipe.aclose()


async def test_5xx_and_reset_are_retried(proxy, make_pipe) -> None:
    pipe = make_pipe(proxy.url, [{"retry": {"attempts": 3, "seed": 1, "backoff": {"base": 0.01}}}])
    proxy.schedule(Fault.status(503), Fault.reset())
    resp = await pipe.acall(chat())
    assert resp.text
    assert [e.fault for e in proxy.events] == ["status", "reset", "ok"]
    d = next(d for d in resp.decisions if d.middleware == "retry")
    assert d.detail["attempts"] == 3
    await pipe.aclose()


async def test_non_retryable_4xx_is_not_retried(proxy, make_pipe) -> None:
    pipe = make_pipe(proxy.url, [{"retry": {"attempts": 3}}])
    proxy.schedule(Fault.status(400))
    with pytest.raises(BackendHTTPError) as err:
        await pipe.acall(chat())
    assert err.value.status == 400
    assert proxy.count() == 1
    await pipe.aclose()


async def test_retry_goes_to_another_replica_at_once(proxy, proxy2, make_pipe) -> None:
    """A failed replica is avoided for the retry: the next send goes to the other replica
    without the (deliberately huge) backoff."""
    pipe = make_pipe(
        [proxy.url, proxy2.url],
        [{"retry": {"attempts": 2, "backoff": {"base": 600, "cap": 600}}}],
    )
    proxy.set_default(Fault.status(500))
    retried = 0
    for i in range(4):
        resp = await pipe.acall(chat(f"Say hi {i}"))
        assert resp.text
        assert resp.endpoint == proxy2.url
        retried += sum(1 for d in resp.decisions if d.middleware == "retry")
    assert proxy.count() >= 1, "least-outstanding balancing sent some first sends to A"
    assert retried == proxy.count()
    assert proxy2.count() == 4
    await pipe.aclose()


async def test_retry_budget_caps_retry_load_in_an_outage(proxy, make_pipe) -> None:
    pipe = make_pipe(
        proxy.url,
        [
            {
                "retry": {
                    "attempts": 3,
                    "backoff": {"base": 0.0},
                    "budget": {"ratio": 0.1, "window_s": 60, "min_per_window": 2},
                }
            }
        ],
    )
    proxy.set_default(Fault.status(503))
    failures = 0
    for _ in range(60):
        with pytest.raises(BackendHTTPError):
            await pipe.acall(chat())
        failures += 1
    retries = proxy.count() - failures
    assert retries <= 0.1 * failures + 2, f"{retries} retries for {failures} requests"
    await pipe.aclose()


async def test_stream_cut_before_first_chunk_is_retried(proxy, make_pipe) -> None:
    pipe = make_pipe(proxy.url, [{"retry": {"attempts": 2, "backoff": {"base": 0.01}}}])
    proxy.schedule(Fault.cut(after_events=0))
    resp = await pipe.acall(chat(stream=True))
    final = await resp.complete()
    assert final.text and final.finish_reason in ("stop", "length")
    assert [e.fault for e in proxy.events] == ["cut", "ok"]
    assert any(d.middleware == "retry" for d in final.decisions)
    await pipe.aclose()


async def test_stream_cut_midway_is_incomplete_never_finished(proxy, make_pipe) -> None:
    pipe = make_pipe(proxy.url, [{"resilience": {"retry": {"attempts": 3}}}])
    proxy.schedule(Fault.cut(after_events=2))
    resp = await pipe.acall(
        chat("Count from one to twenty.", stream=True, params={"max_tokens": 40, "temperature": 0})
    )
    assert resp.stream is not None
    got: list[str] = []
    with pytest.raises(IncompleteStream) as err:
        async for chunk in resp.stream:
            got.append(chunk.text)
    assert got, "the cut came after some text"
    assert resp.stream.response is None  # never a finished answer
    assert err.value.partial_text.startswith("".join(got)[:1])
    assert proxy.count() == 1  # text was out: not retried
    await pipe.aclose()
