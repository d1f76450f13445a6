"""Load shedding with priorities, per-tenant limits in-process and in real Redis shared by
two processes, and the no-silent-loss rule under random faults."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowopt.errors import FlowoptError, RejectedError
from flowopt.resilience import LoadShed, TenantLimits
from flowopt.testing import run_middleware_conformance
from flowopt.testing.faultproxy import Fault
from flowopt.types import Response

from .conftest import chat


async def test_conformance() -> None:
    await run_middleware_conformance(lambda: LoadShed(4, max_queue=32))
    await run_middleware_conformance(lambda: TenantLimits(requests_per_minute=1000))


async def test_shed_rejects_lowest_priority_at_once(proxy, make_pipe) -> None:
    pipe = make_pipe(proxy.url, [{"shed": {"max_concurrency": 1, "max_queue": 1}}])
    proxy.schedule(Fault.delay(1.0))  # holds the only slot while the test fills the queue
    running = asyncio.ensure_future(pipe.acall(chat("first")))
    await proxy.wait_for_requests(1)
    low = asyncio.ensure_future(pipe.acall(chat("low", priority=0)))
    await asyncio.sleep(0)  # let it enqueue (one loop turn, not a timing guess)
    with pytest.raises(RejectedError) as same:  # queue full, not more important: at once
        await pipe.acall(chat("also low", priority=0))
    assert same.value.reason == "shed" and same.value.retry_after and same.value.retry_after > 0
    high = asyncio.ensure_future(pipe.acall(chat("high", priority=5)))
    with pytest.raises(RejectedError) as evicted:  # the newcomer outranks the waiter
        await low
    assert evicted.value.reason == "shed:evicted"
    assert (await running).text and (await high).text
    shed = pipe.middleware[0][1]
    assert shed.pools["default"].active == 0 and not shed.pools["default"].queue
    await pipe.aclose()


async def test_tenant_limits_in_process(proxy, make_pipe) -> None:
    pipe = make_pipe(proxy.url, [{"ratelimit": {"requests_per_minute": 2}}])
    for _ in range(2):
        assert (await pipe.acall(chat(tenant="acme"))).text
    with pytest.raises(RejectedError) as err:
        await pipe.acall(chat(tenant="acme"))
    assert err.value.reason == "rate_limit" and 0 < err.value.retry_after <= 30
    assert (await pipe.acall(chat(tenant="other"))).text  # tenants do not share
    assert proxy.count() == 3
    await pipe.aclose()


async def test_tokens_per_minute_settles_real_usage(proxy, make_pipe) -> None:
    pipe = make_pipe(proxy.url, [{"ratelimit": {"tokens_per_minute": 200}}])
    resp = await pipe.acall(chat(tenant="acme"))
    d = next(d for d in resp.decisions if d.middleware == "ratelimit")
    assert d.detail["estimated_tokens"] >= resp.usage.total_tokens - 40
    # a request estimated beyond what is left is refused with a wait to refill
    with pytest.raises(RejectedError):
        await pipe.acall(chat("x" * 700, tenant="acme", params={"max_tokens": 4, "temperature": 0}))
    await pipe.aclose()


_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    import flowopt
    from flowopt.errors import RejectedError
    from flowopt.types import Params, Request

    async def main(base_url, model, redis_url, n):
        pipe = flowopt.pipeline(
            "limits", backend={"vllm": {"base_url": base_url, "model": model}},
            middleware=[{"ratelimit": {"requests_per_minute": 6, "store": "redis",
                                       "redis_url": redis_url, "prefix": "test2p:"}}],
            steps=[{"name": "a", "prompt": "{input}"}])
        ok = rejected = 0
        for i in range(n):
            try:
                await pipe.acall(Request.chat("Say hi", tenant="acme",
                                              params=Params(max_tokens=1, temperature=0)))
                ok += 1
            except RejectedError:
                rejected += 1
        await pipe.aclose()
        print(json.dumps({"ok": ok, "rejected": rejected}))

    asyncio.run(main(*sys.argv[1:4], int(sys.argv[4])))
    """
)


def test_redis_limits_are_shared_by_two_processes(
    tmp_path: Path, redis_url: str, vllm_url: str, served_model: str
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), vllm_url, served_model, redis_url, "5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(o["ok"] for o in outs) == 6, outs  # one budget of 6/min for both processes
    assert sum(o["rejected"] for o in outs) == 4, outs


async def test_redis_down_fails_open_and_says_so(proxy, make_pipe) -> None:
    pipe = make_pipe(
        proxy.url,
        [
            {
                "ratelimit": {
                    "requests_per_minute": 1,
                    "store": "redis",
                    "redis_url": "redis://127.0.0.1:1/0",
                }
            }
        ],
    )
    resp = await pipe.acall(chat(tenant="acme"))
    d = next(d for d in resp.decisions if d.middleware == "ratelimit")
    assert "store_error" in d.detail
    await pipe.aclose()


async def test_no_request_is_lost_under_random_faults(proxy, proxy2, make_pipe) -> None:
    """Every request ends in a complete response or a typed error; streams that end are
    complete, streams that were cut say so."""
    pipe = make_pipe(
        [proxy.url, proxy2.url],
        [
            {
                "resilience": {
                    "retry": {"attempts": 2, "backoff": {"base": 0.01}, "seed": 3},
                    "breaker": {"failure_threshold": 50},
                    "deadline": 20,
                }
            }
        ],
    )
    faults = [
        Fault.status(503),
        Fault.status(429, retry_after=0.05),
        Fault.reset(),
        Fault.cut(after_events=2),
        Fault.status(500),
    ]
    proxy.set_random(0.5, faults, seed=1)
    proxy2.set_random(0.5, faults, seed=2)

    async def one(i: int) -> Response | FlowoptError:
        try:
            r = await pipe.acall(
                chat(f"Say hi {i}", stream=i % 2 == 0, params={"max_tokens": 6, "temperature": 0})
            )
            return await r.complete()
        except FlowoptError as exc:
            return exc

    results = await asyncio.gather(*(one(i) for i in range(16)))
    assert len(results) == 16
    for r in results:
        if isinstance(r, Response):
            assert r.stream is None and r.finish_reason in ("stop", "length")
        else:
            assert isinstance(r, FlowoptError) and r.code.startswith("flowopt.")
    assert any(isinstance(r, Response) for r in results)
    await pipe.aclose()
