"""Per-endpoint cool-down and circuit breaker.

Two reasons to stop sending to an endpoint, kept apart because they end differently:

- **cool-down**: it answered 429 (or 503) with ``Retry-After``. It told us when to come back;
  it gets no request until then, and then is used normally.
- **circuit open**: it failed ``failure_threshold`` times in a row (5xx, reset, timeout, a
  broken stream). It is taken out for ``open_s`` seconds (doubling on each re-open, up to
  ``max_open_s``); then it is half-open: it takes traffic again and the first outcome
  decides — a success closes the circuit, a failure re-opens it for twice as long.

The layer does not route: it adds the endpoints to avoid to the request
(``Request.avoid``, enforced by :mod:`flowopt.middleware.steer`); the vLLM backend picks
among the other replicas and the steering terminal refuses at once when none is left, so
fallback can move on.
State is per process (a breaker reacts to what *this* process sees, in milliseconds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from flowopt.errors import (
    BackendError,
    BackendHTTPError,
    EndpointCoolingDown,
    IncompleteStream,
)
from flowopt.middleware.base import CallNext, MiddlewareBase, PipelineContext
from flowopt.middleware.options import MiddlewareOptions, make_options
from flowopt.middleware.steer import backend_endpoints
from flowopt.stream import when_final
from flowopt.types import Request, Response

__all__ = ["Breaker", "BreakerOptions", "EndpointState"]

State = Literal["closed", "open", "half_open"]


@dataclass
class EndpointState:
    """What the breaker knows about one endpoint URL."""

    url: str
    state: State = "closed"
    failures: int = 0
    opened_until: float = 0.0
    open_for: float = 0.0
    cool_until: float = 0.0
    opens: int = 0


class BreakerOptions(MiddlewareOptions):
    """Options of ``breaker``."""

    failure_threshold: int = Field(5, ge=1)
    """Consecutive failures of one endpoint that open its circuit."""
    open_s: float = Field(5.0, gt=0)
    """Seconds of the first open period; it doubles on each re-open."""
    max_open_s: float = 60.0
    """Seconds: the longest open period (>= ``open_s``)."""
    default_cooldown_s: float = 1.0
    """Seconds of cool-down after a 429 that came without ``Retry-After``."""
    count_incomplete_streams: bool = True
    """A stream the server cut mid-way counts as a failure."""

    @model_validator(mode="after")
    def _periods(self) -> BreakerOptions:
        if self.max_open_s < self.open_s:
            raise ValueError(
                f"breaker needs open_s <= max_open_s (got {self.open_s} > {self.max_open_s})"
            )
        return self


class Breaker(MiddlewareBase):
    """Options: :class:`BreakerOptions` (``failure_threshold``, ``open_s``,
    ``max_open_s``, ``default_cooldown_s``, ``count_incomplete_streams``)."""

    name: ClassVar[str] = "breaker"
    options_model: ClassVar[type[BreakerOptions]] = BreakerOptions

    def __init__(self, options: BreakerOptions | None = None, /, **kwargs: Any) -> None:
        self.options = opts = make_options(BreakerOptions, options, kwargs, name=self.name)
        self.failure_threshold = opts.failure_threshold
        self.open_s = opts.open_s
        self.max_open_s = opts.max_open_s
        self.default_cooldown_s = opts.default_cooldown_s
        self.count_incomplete_streams = opts.count_incomplete_streams
        self.endpoints: dict[str, EndpointState] = {}
        self._steered = False
        self._default_endpoints: list[str] = []

    async def setup(self, ctx: PipelineContext) -> None:
        self._steered = ctx.steered
        self._default_endpoints = backend_endpoints(ctx.backend)

    # -- state ---------------------------------------------------------------------------
    def _get(self, url: str) -> EndpointState:
        st = self.endpoints.get(url)
        if st is None:
            st = self.endpoints[url] = EndpointState(url)
        return st

    def blocked(self, now: float | None = None) -> dict[str, float]:
        """``{url: monotonic_until}`` of endpoints that must get no request now. Moves an
        open circuit whose time is up to half-open: it takes traffic again, and the first
        outcome decides (success closes it, failure re-opens it for twice as long). Why not
        a single reserved probe: the balancer below may send that one request elsewhere,
        and the endpoint would then never be probed."""
        t = time.monotonic() if now is None else now
        out: dict[str, float] = {}
        for st in self.endpoints.values():
            until = st.cool_until if st.cool_until > t else 0.0
            if st.state == "open":
                if st.opened_until > t:
                    until = max(until, st.opened_until)
                else:
                    st.state = "half_open"
            if until:
                out[st.url] = until
        return out

    def on_success(self, url: str | None) -> None:
        if not url:
            return
        st = self._get(url)
        st.failures = 0
        if st.state != "closed":
            st.state = "closed"
            st.open_for = 0.0

    def on_failure(self, exc: BaseException) -> None:
        if not isinstance(exc, BackendError) or isinstance(exc, EndpointCoolingDown):
            return
        if isinstance(exc, IncompleteStream) and exc.client_left:
            return  # the reader walked away; the endpoint did nothing wrong
        now = time.monotonic()
        for url in (exc.endpoint or "").split(","):
            if not url or url == "(consumer)":
                continue
            st = self._get(url)
            status = exc.status if isinstance(exc, BackendHTTPError) else None
            if status in (429, 503) and (exc.retry_after is not None or status == 429):
                wait = exc.retry_after if exc.retry_after is not None else self.default_cooldown_s
                st.cool_until = max(st.cool_until, now + wait)
                if status == 429:
                    continue  # rate limiting is not ill health
            if not exc.retryable:
                continue
            st.failures += 1
            if st.state == "half_open" or st.failures >= self.failure_threshold:
                self._open(st, now)

    def _open(self, st: EndpointState, now: float) -> None:
        st.open_for = min(self.max_open_s, st.open_for * 2 if st.open_for else self.open_s)
        st.state = "open"
        st.opened_until = now + st.open_for
        st.opens += 1

    # -- the layer -----------------------------------------------------------------------
    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        block = self.blocked()
        if block and not self._steered and self._default_endpoints:
            # nothing below enforces avoidance: refuse here when every endpoint is out
            left = {u: block[u] for u in self._default_endpoints if u in block}
            if len(left) == len(self._default_endpoints):
                raise EndpointCoolingDown(
                    "every endpoint is cooling down or has its circuit open",
                    endpoint=",".join(self._default_endpoints),
                    retry_after=max(0.0, min(left.values()) - time.monotonic()),
                    request_id=request.request_id,
                )
        try:
            response = await call_next(request.avoiding(block))
        except BaseException as exc:
            self.on_failure(exc)
            raise
        url = response.endpoint or (response.stream.endpoint if response.stream else None)

        def ok(final: Response) -> None:
            self.on_success(final.endpoint or url)

        def err(exc: BaseException) -> None:
            if self.count_incomplete_streams:
                self.on_failure(exc)

        response = await when_final(response, ok, err)
        if block:
            now = time.monotonic()
            response = response.with_decision(
                self.decision("avoided", endpoints={u: round(t - now, 3) for u, t in block.items()})
            )
        return response

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per-endpoint state, for ``/health`` pages and tests."""
        now = time.monotonic()
        return {
            u: {
                "state": s.state,
                "failures": s.failures,
                "open_left_s": max(0.0, s.opened_until - now),
                "cooldown_left_s": max(0.0, s.cool_until - now),
                "opens": s.opens,
            }
            for u, s in self.endpoints.items()
        }
