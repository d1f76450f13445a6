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
from typing import Any, ClassVar

from pydantic import Field

from flowopt.errors import BackendTimeout, DeadlineExceeded, IncompleteStream
from flowopt.middleware.base import CallNext, MiddlewareBase
from flowopt.middleware.options import MiddlewareOptions, make_options
from flowopt.resilience._streams import rewrap
from flowopt.types import Chunk, Request, Response

__all__ = ["Deadline", "DeadlineOptions"]


class DeadlineOptions(MiddlewareOptions):
    """Options of ``deadline`` (short form: ``deadline: 30`` sets ``default_s``)."""

    default_s: float | None = Field(None, gt=0)
    """Seconds of budget for requests that came without a deadline (none: no default)."""
    min_s: float = Field(0.01, ge=0)
    """Seconds: a request with less than this left is refused (it cannot succeed)."""
    stream: bool = True
    """Also bound the time to the last chunk of a streamed answer."""


class Deadline(MiddlewareBase):
    """Options: :class:`DeadlineOptions` (``default_s``, ``min_s``, ``stream``)."""

    name: ClassVar[str] = "deadline"
    positional: ClassVar[str | None] = "default_s"
    options_model: ClassVar[type[DeadlineOptions]] = DeadlineOptions

    def __init__(self, options: DeadlineOptions | float | None = None, /, **kwargs: Any) -> None:
        self.options = opts = make_options(
            DeadlineOptions, options, kwargs, name=self.name, positional=self.positional
        )
        self.default_s = opts.default_s
        self.min_s = opts.min_s
        self.stream = opts.stream

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
