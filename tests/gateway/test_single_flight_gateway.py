"""Single flight through the gateway: concurrent identical requests reach the engine once.

The engine is a counting fake (``FakeGatedBackend``) that holds its answers until the test
opens its gate, so every follower is provably waiting first. The gateway is the real app
(auth, tenancy, metrics) over the real cache middleware, driven in-process over ASGI.
"""

from __future__ import annotations

import asyncio

import httpx

from flowopt import pipeline
from flowopt.cache import CacheMiddleware, MemoryStore
from flowopt.gateway import create_app
from flowopt.spec import GatewaySpec
from flowopt.testing import FakeBackend
from flowopt.types import Request, Response

KEYS = {"acme": "acme-key-0123456789", "globex": "globex-key-0123456789"}


class FakeGatedBackend(FakeBackend):
    """A counting fake engine whose answers wait for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.n = 0

    async def generate(self, request: Request) -> Response:
        self.n += 1
        await self.gate.wait()
        return await super().generate(request)


async def test_identical_requests_coalesce_per_tenant_through_the_gateway() -> None:
    backend = FakeGatedBackend()
    cache = CacheMiddleware(store=MemoryStore(), semantic=False)
    pipe = pipeline(
        "sf", backend=backend, middleware=[cache], steps=[{"name": "a", "prompt": "{input}"}]
    )
    app = create_app(pipe, GatewaySpec(api_keys=KEYS))  # type: ignore[arg-type]
    await pipe.start()
    body = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
    }
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw"
        ) as c:

            async def ask(tenant: str, stream: bool) -> httpx.Response:
                headers = {"authorization": f"Bearer {KEYS[tenant]}"}
                return await c.post(
                    "/v1/chat/completions", json={**body, "stream": stream}, headers=headers
                )

            tasks = [
                asyncio.ensure_future(ask(t, stream=i % 2 == 1)) for t in KEYS for i in range(10)
            ]
            for _ in range(10_000):  # a condition, not a sleep: every follower waits
                if cache.flights.waiting() == 18:
                    break
                await asyncio.sleep(0)
            assert cache.flights.waiting() == 18
            backend.gate.set()
            answers = await asyncio.gather(*tasks)
            metrics = (await c.get("/metrics")).text
    finally:
        await pipe.aclose()
    assert backend.n == 2  # one engine call per tenant, never one across tenants
    assert all(r.status_code == 200 for r in answers)
    jsons = [r.json() for r in answers if r.headers["content-type"].startswith("application/json")]
    assert {j["choices"][0]["message"]["content"] for j in jsons} == {
        "echo: What is the capital of France?"
    }
    actions = sorted(
        d["action"] for j in jsons for d in j["flowopt"]["decisions"] if d["middleware"] == "cache"
    )
    assert actions.count("coalesced") >= 8 and set(actions) <= {"miss", "coalesced"}
    streamed = [r.text for r in answers if r.headers["content-type"].startswith("text/event")]
    assert len(streamed) == 10 and all("capital" in s and "[DONE]" in s for s in streamed)
    line = next(
        ln
        for ln in metrics.splitlines()
        if ln.startswith("flowopt_gateway_decisions_total") and 'action="coalesced"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) == 18.0
