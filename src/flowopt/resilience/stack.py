"""``resilience``: the small layers composed in the one order that works, as one entry.

Each layer is its own middleware (``deadline``, ``ratelimit``, ``fallback``, ``retry``,
``shed``, ``breaker``) and can be listed alone; this one composes the ones you configure,
outermost first::

    deadline -> ratelimit -> fallback -> retry -> shed -> breaker -> (backend)

Why this order: the deadline is set before anything spends time; a tenant over its limit is
refused before it costs anything; fallback sees the outcome after retries; every retry
re-enters the shedder (a backoff sleep holds no slot) and the breaker (so it sees each
attempt's endpoint); the breaker is innermost so its avoid set reaches the backend. Each
inner layer gets its own ``middleware <name>`` span with its decisions.
"""

from __future__ import annotations

from typing import Any, ClassVar

from flowopt.middleware.base import (
    CallNext,
    Middleware,
    MiddlewareBase,
    PipelineContext,
    build_stack,
)
from flowopt.middleware.options import MiddlewareOptions, PyObject, make_options
from flowopt.resilience.breaker import Breaker, BreakerOptions
from flowopt.resilience.deadline import Deadline, DeadlineOptions
from flowopt.resilience.fallback import Fallback, FallbackOptions
from flowopt.resilience.limits import TenantLimits, TenantLimitsOptions
from flowopt.resilience.retry import Retry, RetryOptions
from flowopt.resilience.shed import LoadShed, LoadShedOptions
from flowopt.tracing import PipelineTracing
from flowopt.types import Request, Response

__all__ = ["Resilience", "ResilienceOptions"]


class ResilienceOptions(MiddlewareOptions):
    """Options of ``resilience``. Each layer: ``true`` for its defaults, ``false`` or
    omitted for off, its options as a mapping, or its short-form value. From Python, a
    built layer object is used as is."""

    deadline: bool | DeadlineOptions | float | PyObject[Deadline] | None = None
    """The ``deadline`` layer (off; a number is the default budget in seconds)."""
    ratelimit: bool | TenantLimitsOptions | PyObject[TenantLimits] | None = None
    """The ``ratelimit`` layer (off)."""
    fallback: bool | FallbackOptions | list[str] | str | PyObject[Fallback] | None = None
    """The ``fallback`` layer (off; a list is the tiers)."""
    retry: bool | RetryOptions | int | PyObject[Retry] | None = True
    """The ``retry`` layer (on; a number is the attempts)."""
    shed: bool | LoadShedOptions | int | PyObject[LoadShed] | None = None
    """The ``shed`` layer (off; a number is max_concurrency)."""
    breaker: bool | BreakerOptions | PyObject[Breaker] | None = True
    """The ``breaker`` layer (on)."""


def _layer(cls: Any, value: Any) -> Any:
    """``None``/``False`` -> off, ``True`` -> defaults, options or a short-form value ->
    a new layer, a layer object -> itself."""
    if value is None or value is False:
        return None
    if isinstance(value, cls):
        return value
    return cls() if value is True else cls(value)


class Resilience(MiddlewareBase):
    """Options: :class:`ResilienceOptions` (``deadline``, ``ratelimit``, ``fallback``,
    ``retry``, ``shed``, ``breaker``)."""

    name: ClassVar[str] = "resilience"
    options_model: ClassVar[type[ResilienceOptions]] = ResilienceOptions

    def __init__(self, options: ResilienceOptions | None = None, /, **kwargs: Any) -> None:
        self.options = opts = make_options(ResilienceOptions, options, kwargs, name=self.name)
        spec = (
            ("deadline", Deadline, opts.deadline),
            ("ratelimit", TenantLimits, opts.ratelimit),
            ("fallback", Fallback, opts.fallback),
            ("retry", Retry, opts.retry),
            ("shed", LoadShed, opts.shed),
            ("breaker", Breaker, opts.breaker),
        )
        self.layers: list[tuple[str, Middleware]] = []
        for what, cls, value in spec:
            layer = _layer(cls, value)
            if layer is not None:
                self.layers.append((what, layer))
        self._tracing: PipelineTracing | None = None
        # the inner stack, composed once per `call_next` (a pipeline passes the same one
        # on every request), not on every request
        self._built: tuple[CallNext, CallNext] | None = None

    def layer(self, name: str) -> Any:
        """The configured layer called ``name`` (e.g. ``"breaker"``), or None."""
        return next((mw for n, mw in self.layers if n == name), None)

    async def setup(self, ctx: PipelineContext) -> None:
        self._tracing = ctx.tracing  # the layers' spans use the pipeline's tracer
        self._built = None
        for _, layer in self.layers:
            setup = getattr(layer, "setup", None)
            if setup is not None:
                await setup(ctx)

    async def aclose(self) -> None:
        for _, layer in self.layers:
            close = getattr(layer, "aclose", None)
            if close is not None:
                await close()

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        built = self._built
        if built is None or built[0] is not call_next:
            built = self._built = (
                call_next,
                build_stack(self.layers, call_next, tracing=self._tracing),
            )
        return await built[1](request)
