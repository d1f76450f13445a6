"""Cool-down, circuit breaker, tier fallback, stale answers and deadlines, through the
fault proxy against the real server."""

from __future__ import annotations

import asyncio
import time

import pytest

from flowopt.errors import BackendHTTPError, BackendTimeout, EndpointCoolingDown, RejectedError
from flowopt.resilience import Breaker, Deadline, Fallback
from flowopt.testing import run_middleware_conformance
from flowopt.testing.faultproxy import Fault

from .conftest import chat


async def test_conformance() -> None:
    await run_middleware_conformance(Breaker)
    await run_middleware_conformance(Fallback)
    await run_middleware_conformance(lambda: Deadline(30))


async def test_429_retry_after_cools_the_endpoint_down(proxy, make_pipe) -> None:
    """After a 429 with Retry-After the endpoint gets no request until it passes."""
    pipe = make_pipe(proxy.url, [{"resilience": {"retry": {"max_retry_after": 1}}}])
    proxy.schedule(Fault.status(429, retry_after=30))
    with pytest.raises(BackendHTTPError):  # 30 s is more than this caller will wait
        await pipe.acall(chat())
    with pytest.raises(EndpointCoolingDown) as err:
        await pipe.acall(chat())
    assert err.value.retry_after is not None and 25 < err.value.retry_after <= 30
    assert proxy.count() == 1, "nothing may reach a cooling endpoint"
    await pipe.aclose()


async def test_failing_endpoint_is_taken_out_then_probed_back(proxy, proxy2, make_pipe) -> None:
    open_s = 4.0  # long enough that the requests below all fall inside it
    pipe = make_pipe(
        [proxy.url, proxy2.url],
        [
            {
                "resilience": {
                    "retry": {"attempts": 2, "backoff": {"base": 0.01}},
                    "breaker": {"failure_threshold": 2, "open_s": open_s},
                }
            }
        ],
    )
    breaker = pipe.middleware[0][1].layer("breaker")
    proxy.set_default(Fault.status(503))
    for i in range(5):
        resp = await pipe.acall(chat(f"hello {i}"))
        assert resp.endpoint == proxy2.url
    assert breaker.snapshot()[proxy.url]["state"] == "open"
    sends_to_a = proxy.count()
    assert sends_to_a == 2, "after 2 failures A is out: no more sends"
    proxy.set_default(Fault.ok())
    await asyncio.sleep(open_s)  # the open period under test has to pass; nothing to await
    seen_a = False
    for i in range(4):  # least-outstanding picks A again once it is half-open
        resp = await pipe.acall(chat(f"probe {i}"))
        seen_a = seen_a or resp.endpoint == proxy.url
    assert seen_a, "a half-open endpoint is probed"
    assert breaker.snapshot()[proxy.url]["state"] == "closed"
    await pipe.aclose()


async def test_fallback_to_another_tier_is_recorded(proxy, vllm_url, make_pipe) -> None:
    pipe = make_pipe(
        proxy.url,
        [
            {
                "resilience": {
                    "fallback": ["strong"],
                    "retry": {"attempts": 2, "backoff": {"base": 0.01}},
                }
            }
        ],
        backends={"strong": vllm_url},
    )
    proxy.set_default(Fault.status(503))
    resp = await pipe.acall(chat())
    assert resp.text and resp.endpoint == vllm_url
    d = next(d for d in resp.decisions if d.middleware == "fallback")
    assert d.action == "fell_back" and d.detail["served_by"] == "strong"
    assert d.detail["path"][0]["error"] == "flowopt.backend.http"
    await pipe.aclose()


async def test_stale_answer_when_every_tier_fails(proxy, make_pipe) -> None:
    pipe = make_pipe(
        proxy.url,
        [{"resilience": {"fallback": {"stale": True}, "retry": {"backoff": {"base": 0.01}}}}],
    )
    req = chat("What colour is the sky?", tenant="t1")
    fresh = await pipe.acall(req)
    assert not fresh.metadata.get("stale")
    proxy.set_default(Fault.status(503))
    old = await pipe.acall(req.replace(request_id="again"))
    assert old.text == fresh.text
    assert old.metadata["stale"] is True and old.cached
    assert any(d.middleware == "fallback" and d.action == "stale" for d in old.decisions)
    with pytest.raises(BackendHTTPError):  # another tenant never gets t1's answer
        await pipe.acall(req.replace(tenant="t2"))
    await pipe.aclose()


async def test_deadline_bounds_a_hang_and_is_passed_down(proxy, make_pipe) -> None:
    pipe = make_pipe(proxy.url, [{"resilience": {"deadline": 30, "retry": {"attempts": 3}}}])
    proxy.schedule(Fault.hang())
    req = chat(deadline=time.monotonic() + 1.0)
    with pytest.raises(BackendTimeout):
        await pipe.acall(req)
    assert [e.fault for e in proxy.events] == ["hang"], "no retry past the deadline"
    with pytest.raises(RejectedError) as err:
        await pipe.acall(chat(deadline=time.monotonic() - 1))
    assert err.value.reason == "deadline"
    await pipe.aclose()
