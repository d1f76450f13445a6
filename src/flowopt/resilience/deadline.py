"""Deadlines: one time budget per request that every hop respects and passes down.

The budget lives on the request as an absolute ``time.monotonic()`` value
(:attr:`~flowopt.types.Request.deadline`), so it survives every layer unchanged: retries
never sleep past it, the vLLM backend shortens its HTTP timeout to it, and a streamed answer
is cut (reported incomplete) when it runs out. This layer sets a default budget when the
caller gave none, refuses a request whose budget is already spent (a typed
``DeadlineExceeded`` instead of a doomed call), and is the backstop that converts an overrun
anywhere below into :class:`~flowopt.errors.BackendTimeout`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import ClassVar

from flowopt.errors import BackendTimeout, ConfigError, DeadlineExceeded, IncompleteStream
from flowopt.middleware.base import CallNext, MiddlewareBase
from flowopt.resilience._streams import rewrap
from flowopt.types import Chunk, Request, Response

__all__ = ["Deadline"]


class Deadline(MiddlewareBase):
    """Options:

    - ``default_s`` (none): budget for requests that came without a deadline.
    - ``min_s`` (0.01): refuse a request with less than this left (it cannot succeed).
    - ``stream`` (true): also bound the time to the last chunk of a streamed answer.
    """

    name: ClassVar[str] = "deadline"
    positional: ClassVar[str | None] = "default_s"

    def __init__(
        self, default_s: float | None = None, *, min_s: float = 0.01, stream: bool = True
    ) -> None:
        if default_s is not None and default_s <= 0:
            raise ConfigError(f"deadline default_s must be > 0, got {default_s}", hint="seconds")
        self.default_s = default_s
        self.min_s = min_s
        self.stream = stream

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        if request.deadline is None:
            if self.default_s is None:
                return await call_next(request)
            request = request.replace(deadline=time.monotonic() + self.default_s)
        assert request.deadline is not None
        deadline = request.deadline
        left = deadline - time.monotonic()
        if left < self.min_s:
            raise DeadlineExceeded(
                f"request {request.request_id} has {max(left, 0.0) * 1000:.0f} ms of its "
                "deadline left; not sent",
                reason="deadline",
                retry_after=None,
                request_id=request.request_id,
                hint="give the request a longer timeout, or shed earlier work",
            )
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + left):
                response = await call_next(request)
        except TimeoutError:
            raise BackendTimeout(
                "the request's deadline passed before an answer arrived",
                endpoint="(deadline)",
                request_id=request.request_id,
                hint="raise the timeout, or lower max_tokens so the answer fits",
            ) from None
        if self.stream and response.stream is not None and not response.stream.done:
            response = self._bound_stream(request, response, deadline)
        return response

    def _bound_stream(self, request: Request, handle: Response, deadline: float) -> Response:
        inner = handle.stream
        assert inner is not None

        async def source() -> AsyncIterator[Chunk]:
            loop = asyncio.get_running_loop()
            it = inner.__aiter__()
            texts: list[str] = []
            while True:
                try:
                    async with asyncio.timeout_at(loop.time() + deadline - time.monotonic()):
                        chunk = await it.__anext__()
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    await inner.aclose()
                    raise IncompleteStream(
                        "the request's deadline passed mid-stream; the answer is incomplete",
                        endpoint=handle.endpoint or "(deadline)",
                        partial_text="".join(texts),
                    ) from None
                texts.append(chunk.text)
                yield chunk

        def final() -> Response:
            done = inner.response
            assert done is not None
            return done

        return rewrap(handle, source(), final, on_abandon=inner.aclose)
