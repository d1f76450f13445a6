"""Retry: try again on retryable failures only, with jittered backoff, honouring
``Retry-After``, inside the request's deadline and a shared retry budget.

What is retried: :class:`~flowopt.errors.BackendError` with ``retryable`` set — 429, 5xx,
connection refused/reset, timeouts, and a stream that broke *before its first chunk*. Never
a 4xx other than 429, a protocol error, or a stream that already delivered text (the user
saw part of an answer; it is reported as :class:`~flowopt.errors.IncompleteStream`).

Replica fallback: the endpoint that failed is put in the request's avoid set
(``Request.avoid``, enforced by :mod:`flowopt.middleware.steer`) until its delay has
passed, so the next attempt goes to another replica at once when there is one, and waits
out the delay when there is none (the steering terminal refuses with
``EndpointCoolingDown``, which this layer waits out without spending budget: nothing was
sent).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import Field

from flowopt.errors import BackendError, EndpointCoolingDown
from flowopt.middleware.base import CallNext, MiddlewareBase, PipelineContext
from flowopt.middleware.options import MiddlewareOptions, PyObject, make_options
from flowopt.resilience._streams import rewrap
from flowopt.resilience.backoff import Backoff, RetryBudget, RetryBudgetOptions
from flowopt.types import Chunk, Request, Response

__all__ = ["Retry", "RetryOptions"]


class RetryOptions(MiddlewareOptions):
    """Options of ``retry`` (short form: ``retry: 3`` sets ``attempts``)."""

    attempts: int = Field(3, ge=1)
    """Sends per request, the first included."""
    backoff: Backoff = Backoff()
    """Full-jitter delays between sends: ``{base: 0.1, cap: 5, multiplier: 2}``."""
    max_retry_after: float = Field(30.0, ge=0)
    """Seconds: a ``Retry-After`` longer than this is not waited out; the error goes up
    (to fallback) at once."""
    budget: RetryBudgetOptions | bool | PyObject[RetryBudget] = True
    """Retries as a share of first attempts (``{ratio: 0.1, window_s: 10,
    min_per_window: 3}``); ``true``: those defaults; ``false`` disables the budget (not
    recommended). From Python, a ``RetryBudget`` object shares one budget between layers."""
    retry_streams: bool = True
    """Retry a stream that fails before its first chunk."""
    seed: int | None = None
    """Seeds the jitter (tests and benchmarks)."""


@dataclass
class _Attempts:
    """Mutable record of one request's attempts (shared with its stream wrapper)."""

    sent: int = 0
    waits: int = 0
    errors: list[str] = field(default_factory=list)
    avoid: dict[str, float] = field(default_factory=dict)
    waited_s: float = 0.0
    budget_exhausted: bool = False


class Retry(MiddlewareBase):
    """Options: :class:`RetryOptions` (``attempts``, ``backoff``, ``max_retry_after``,
    ``budget``, ``retry_streams``, ``seed``)."""

    name: ClassVar[str] = "retry"
    positional: ClassVar[str | None] = "attempts"
    options_model: ClassVar[type[RetryOptions]] = RetryOptions

    def __init__(self, options: RetryOptions | int | None = None, /, **kwargs: Any) -> None:
        self.options = opts = make_options(
            RetryOptions, options, kwargs, name=self.name, positional=self.positional
        )
        self.attempts = opts.attempts
        self.backoff = opts.backoff
        self.max_retry_after = opts.max_retry_after
        budget = opts.budget
        if isinstance(budget, RetryBudget):
            self.budget: RetryBudget | None = budget
        elif isinstance(budget, RetryBudgetOptions):
            self.budget = budget.build()
        else:
            self.budget = RetryBudget() if budget else None
        self.retry_streams = opts.retry_streams
        self._rng = random.Random(opts.seed)
        self._steered = False

    async def setup(self, ctx: PipelineContext) -> None:
        self._steered = ctx.steered

    # -- the attempt loop --------------------------------------------------------------
    def _delay_for(self, exc: BackendError, retry_no: int) -> float | None:
        """Seconds to wait before the next send, or None when this error must go up."""
        if exc.retry_after is not None:
            return None if exc.retry_after > self.max_retry_after else exc.retry_after
        return self.backoff.delay(retry_no, self._rng)

    def _fits(self, request: Request, delay: float) -> bool:
        left = request.remaining()
        return left is None or left > delay

    async def _send(self, request: Request, call_next: CallNext, st: _Attempts) -> Response:
        """Send until a response handle comes back or the error must go up."""
        while True:
            attempt_req = request.avoiding(st.avoid)
            try:
                st.sent += 1
                return await call_next(attempt_req)
            except EndpointCoolingDown as exc:
                st.sent -= 1  # nothing went out
                wait = exc.retry_after or 0.0
                st.waits += 1
                if (
                    wait > self.max_retry_after
                    or not self._fits(request, wait)
                    or st.waits > self.attempts * 4
                ):
                    raise
                st.waited_s += wait
                await asyncio.sleep(wait)
            except BackendError as exc:
                await self._before_retry(request, exc, st)

    async def _before_retry(self, request: Request, exc: BackendError, st: _Attempts) -> None:
        """Re-raise ``exc`` unless another send is allowed; otherwise prepare it."""
        st.errors.append(exc.code if not hasattr(exc, "status") else f"http {exc.status}")
        if not exc.retryable or st.sent >= self.attempts:
            raise exc
        delay = self._delay_for(exc, st.sent)
        if delay is None or not self._fits(request, delay):
            raise exc
        if self.budget is not None and not self.budget.try_spend():
            st.budget_exhausted = True
            exc.add_note("flowopt.retry: retry budget exhausted; not retried")
            raise exc
        now = time.monotonic()
        for ep in (exc.endpoint or "").split(","):
            if ep:
                st.avoid[ep] = max(st.avoid.get(ep, 0.0), now + delay)
        if not self._steered:
            # Without a steering terminal nobody below enforces the avoid set: wait here.
            st.waited_s += delay
            await asyncio.sleep(delay)

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        if self.budget is not None:
            self.budget.record_request()
        st = _Attempts()
        try:
            response = await self._send(request, call_next, st)
        except BackendError as exc:
            exc.add_note(f"flowopt.retry: {st.sent} send(s), errors {st.errors}")
            raise
        if response.stream is not None and not response.stream.done and self.retry_streams:
            response = self._watch_stream(request, call_next, response, st)
        if st.sent > 1 or st.waits:
            response = response.with_decision(self._record(st))
        return response

    def _record(self, st: _Attempts) -> Any:
        return self.decision(
            "retried",
            attempts=st.sent,
            errors=list(st.errors),
            cooldown_waits=st.waits,
            waited_s=round(st.waited_s, 3),
        )

    # -- streams: retry only before the first chunk ------------------------------------------
    def _watch_stream(
        self, request: Request, call_next: CallNext, first: Response, st: _Attempts
    ) -> Response:
        box: dict[str, Response] = {"current": first}
        before = st.sent

        async def source() -> AsyncIterator[Chunk]:
            while True:
                current = box["current"]
                assert current.stream is not None
                yielded = False
                try:
                    async for chunk in current.stream:
                        yielded = True
                        yield chunk
                    return
                except BackendError as exc:
                    if yielded:
                        raise  # part of the answer is out: report it incomplete, never retry
                    await self._before_retry(request, exc, st)
                    box["current"] = await self._send(request, call_next, st)
                    if box["current"].stream is None:
                        # a layer below answered in full (e.g. a stale answer): replay it
                        resp = box["current"]
                        yield Chunk(resp.text, 0, finish_reason=resp.finish_reason)
                        return

        def final() -> Response:
            current = box["current"]
            done = current.stream.response if current.stream is not None else current
            assert done is not None
            if st.sent > before:
                done = done.with_decision(self._record(st))
            return done

        async def abandon() -> None:
            current = box["current"]
            if current.stream is not None:
                await current.stream.aclose()

        return rewrap(first, source(), final, on_abandon=abandon)
