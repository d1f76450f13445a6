"""Resilience against injected faults: retries, cool-down, fallback, stale answers, limits
and shedding, with the fault proxy in front of the real server.

    FLOWOPT_BASE_URL=http://127.0.0.1:8000 python examples/resilience.py

Every request ends in an answer or a typed error; every retry, fallback and stale answer is
in the response's decisions (and on the trace).
"""

from __future__ import annotations

import asyncio
import os

from flowopt import FlowoptError, Params, RejectedError, Request, pipeline
from flowopt.testing.faultproxy import Fault, FaultProxy

BASE_URL = os.environ.get("FLOWOPT_BASE_URL", "http://127.0.0.1:8000")
MODEL = os.environ.get("FLOWOPT_MODEL", "smollm2")
GREEDY = Params(max_tokens=8, temperature=0)


def decisions(resp: object) -> str:
    return ", ".join(f"{d.middleware}:{d.action}" for d in resp.decisions)  # type: ignore[attr-defined]


async def main() -> None:
    async with FaultProxy(BASE_URL) as flaky:
        pipe = pipeline(
            "resilient",
            backend={"vllm": {"base_url": flaky.url, "model": MODEL}},
            backends={"backup": {"vllm": {"base_url": BASE_URL, "model": MODEL}}},
            middleware=[
                {
                    "resilience": {
                        "deadline": 30,
                        "ratelimit": {"requests_per_minute": 100, "tokens_per_minute": 50000},
                        "fallback": ["backup"],
                        "retry": {"attempts": 3, "backoff": {"base": 0.05}},
                        "shed": {"max_concurrency": 8, "max_queue": 8},
                        "breaker": {"failure_threshold": 3, "open_s": 5},
                    }
                }
            ],
            steps=[{"name": "a", "prompt": "{input}"}],
        )
        q = Request.chat("Say hello.", params=GREEDY, tenant="acme")

        flaky.schedule(Fault.status(429, retry_after=0.2), Fault.reset())
        r = await pipe.acall(q)
        print(f"429 then reset -> answered {r.text!r}; {decisions(r)}")

        flaky.set_default(Fault.status(503))  # the primary is down
        r = await pipe.acall(q.replace(request_id="2"))
        print(f"primary down -> served by {r.endpoint}; {decisions(r)}")

        flaky.schedule(Fault.cut(after_events=2))
        flaky.set_default(Fault.ok())
        breaker = pipe.middleware[0][1].layer("breaker")
        print("breaker:", {u: s["state"] for u, s in breaker.snapshot().items()})

        r = await pipe.acall(
            Request.chat("Count to ten.", stream=True, params=GREEDY, tenant="acme")
        )
        try:
            final = await r.complete()
            print(f"stream answered: {final.text!r}")
        except FlowoptError as exc:
            print(f"stream cut mid-way -> {type(exc).__name__} (never a finished answer)")

        tight = pipeline(
            "limited",
            backend={"vllm": {"base_url": BASE_URL, "model": MODEL}},
            middleware=[{"ratelimit": {"requests_per_minute": 1}}],
            steps=[{"name": "a", "prompt": "{input}"}],
        )
        await tight.acall(q)
        try:
            await tight.acall(q)
        except RejectedError as exc:
            print(
                f"tenant over limit -> RejectedError({exc.reason}, retry_after={exc.retry_after}s)"
            )
        await tight.aclose()
        await pipe.aclose()


if __name__ == "__main__":
    asyncio.run(main())
