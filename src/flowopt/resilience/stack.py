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

from collections.abc import Mapping
from typing import Any, ClassVar

from flowopt.errors import ConfigError
from flowopt.middleware.base import (
    CallNext,
    Middleware,
    MiddlewareBase,
    PipelineContext,
    build_stack,
)
from flowopt.resilience.breaker import Breaker
from flowopt.resilience.deadline import Deadline
from flowopt.resilience.fallback import Fallback
from flowopt.resilience.limits import TenantLimits
from flowopt.resilience.retry import Retry
from flowopt.resilience.shed import LoadShed
from flowopt.tracing import PipelineTracing
from flowopt.types import Request, Response

__all__ = ["Resilience"]


def _layer(cls: Any, value: Any, what: str) -> Any:
    """``None``/``False`` -> off, ``True`` -> defaults, a mapping -> options, a scalar ->
    the layer's positional option, an instance -> itself."""
    if value is None or value is False:
        return None
    if isinstance(value, cls):
        return value
    if value is True:
        return cls()
    if isinstance(value, Mapping):
        try:
            return cls(**dict(value))
        except TypeError as exc:
            raise ConfigError(
                f"resilience.{what}: {exc}", hint=f"see the docs of {what!r}"
            ) from None
    if isinstance(value, list | tuple | int | float | str):
        return cls(value)
    raise ConfigError(f"resilience.{what}: cannot read {value!r}", hint="use true, false or {...}")


class Resilience(MiddlewareBase):
    """Options (each: ``true`` for defaults, ``false``/omitted for off, or a mapping):
    ``deadline`` (off; a number is the default budget in s), ``ratelimit`` (off),
    ``fallback`` (off; a list is the tiers), ``retry`` (on), ``shed`` (off; a number is
    max_concurrency), ``breaker`` (on)."""

    name: ClassVar[str] = "resilience"

    def __init__(
        self,
        *,
        deadline: Any = None,
        ratelimit: Any = None,
        fallback: Any = None,
        retry: Any = True,
        shed: Any = None,
        breaker: Any = True,
    ) -> None:
        spec = (
            ("deadline", Deadline, deadline),
            ("ratelimit", TenantLimits, ratelimit),
            ("fallback", Fallback, fallback),
            ("retry", Retry, retry),
            ("shed", LoadShed, shed),
            ("breaker", Breaker, breaker),
        )
        self.layers: list[tuple[str, Middleware]] = []
        for what, cls, value in spec:
            layer = _layer(cls, value, what)
            if layer is not None:
                self.layers.append((what, layer))
        self._tracing: PipelineTracing | None = None

    def layer(self, name: str) -> Any:
        """The configured layer called ``name`` (e.g. ``"breaker"``), or None."""
        return next((mw for n, mw in self.layers if n == name), None)

    async def setup(self, ctx: PipelineContext) -> None:
        self._tracing = ctx.tracing  # the layers' spans use the pipeline's tracer
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
        return await build_stack(self.layers, call_next, tracing=self._tracing)(request)
