"""The checks every middleware must pass, runnable from a plugin's own test suite.

    from flowopt.testing import run_middleware_conformance
    async def test_conformance():
        await run_middleware_conformance(lambda: MyMiddleware(option=1))

What it checks, and why each matters in a stack:
1. A plain request comes back as a complete :class:`Response` (``text`` is a string).
2. A streamed request comes back streaming, and the stream still yields every chunk and
   completes (a middleware must not swallow or pre-consume a stream it does not own).
3. A backend error propagates as the same typed error (no wrapping into bare exceptions,
   no silent success).
4. The request object given to ``call_next`` is a :class:`Request` (frozen types only).
5. The middleware survives concurrent calls (16 at once) without mixing responses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from flowopt.errors import BackendUnavailable
from flowopt.middleware.base import PipelineContext, build_stack, traced_backend
from flowopt.testing.fakes import FakeBackend
from flowopt.types import Params, Request, Response

__all__ = ["run_middleware_conformance"]


async def run_middleware_conformance(factory: Callable[[], Any]) -> None:
    """Raise AssertionError naming the first broken rule."""
    backend = FakeBackend(lambda r: f"answer to {r.last_user_text}")
    mw = factory()
    ctx = PipelineContext(name="conformance", backend=backend, backends={"default": backend})
    setup = getattr(mw, "setup", None)
    if setup is not None:
        await setup(ctx)
    seen: list[Any] = []

    async def spy(request: Request, call_next: Any) -> Response:
        seen.append(request)
        return await call_next(request)  # type: ignore[no-any-return]

    handler = build_stack([("under-test", mw), ("spy", spy)], traced_backend(backend, name="fake"))
    greedy = Params(temperature=0.0, max_tokens=16)

    resp = await handler(Request.chat("conformance one", params=greedy, tenant="t1"))
    assert isinstance(resp, Response), "rule 1: a middleware must return a Response"
    final = await resp.complete()
    assert isinstance(final.text, str), "rule 1: the response text must be a string"

    sresp = await handler(
        Request.chat("conformance stream", params=greedy, stream=True, tenant="t1")
    )
    assert sresp.stream is not None, "rule 2: a streamed request must come back streaming"
    texts = [c.text async for c in sresp.stream]
    done = sresp.stream.response
    assert done is not None, "rule 2: the stream must complete"
    assert "".join(texts) == done.text, "rule 2: chunks must add up to the final text"

    for req in seen:
        assert isinstance(req, Request), "rule 4: call_next must receive a Request"

    failing = FakeBackend(fail=BackendUnavailable("down", endpoint="fake://down"))
    fail_handler = build_stack([("under-test", mw)], traced_backend(failing, name="fake"))
    try:
        r = await fail_handler(Request.chat("conformance fail", params=greedy, tenant="t1"))
        await r.complete()
    except BackendUnavailable:
        pass
    except Exception as exc:  # pragma: no cover - reported to the plugin author
        raise AssertionError(
            f"rule 3: a backend error must propagate typed, got {type(exc).__name__}"
        ) from exc
    else:
        raise AssertionError("rule 3: a failing backend must not produce a success")

    async def one(i: int) -> None:
        r = await handler(Request.chat(f"conformance concurrent {i}", params=greedy, tenant="t1"))
        f = await r.complete()
        assert f"concurrent {i}" in f.text, "rule 5: concurrent calls got mixed responses"

    await asyncio.gather(*(one(i) for i in range(16)))
    close = getattr(mw, "aclose", None)
    if close is not None:
        await close()
