"""Per-tenant limits: requests per minute and LLM tokens per minute.

Why tokens too: one tenant's 8k-token prompts cost a GPU as much as hundreds of short
questions; a request count alone lets it starve the rest. Before the call the layer takes
one request-token and an *estimate* of the LLM tokens (prompt characters / 4 plus
``max_tokens``, or ``default_output_tokens``); when the answer arrives it settles the
difference with the real usage, so an over-estimate is refunded and an under-estimate
becomes debt the tenant waits off. A refused request gets
``RateLimited(reason="rate_limit", retry_after=...)`` at once — no queueing.

The store is in-process by default; ``store: redis`` with ``redis_url`` shares one budget
between every process of the app (atomic Lua script, Redis's clock). If Redis fails the
layer admits (``fail_open: true``, the default) and records ``store_error`` on the span:
an outage of the limiter must not become an outage of the app.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from flowopt.errors import ConfigError, RateLimited, StoreError
from flowopt.middleware.base import CallNext, MiddlewareBase
from flowopt.middleware.options import MiddlewareOptions, PyObject, make_options
from flowopt.resilience.buckets import BucketSpec, BucketStore, MemoryBuckets, RedisBuckets
from flowopt.stream import when_final
from flowopt.types import Request, Response

__all__ = ["TenantLimits", "TenantLimitsOptions", "TenantOverride", "estimate_tokens"]

_Positive = Annotated[float, Field(gt=0)]


class TenantOverride(MiddlewareOptions):
    """One tenant's own limits (unset fields keep the shared ones)."""

    requests_per_minute: _Positive | None = None
    """Refill rate of the request bucket."""
    tokens_per_minute: _Positive | None = None
    """Refill rate of the LLM-token bucket."""
    burst_requests: _Positive | None = None
    """Size of the request bucket (default: one minute's worth)."""
    burst_tokens: _Positive | None = None
    """Size of the token bucket (default: one minute's worth)."""


class TenantLimitsOptions(TenantOverride):
    """Options of ``ratelimit``: the shared limits (at least one rate), plus these."""

    per_tenant: dict[str, TenantOverride] = Field(default_factory=dict)
    """``{tenant: {requests_per_minute: .., tokens_per_minute: ..}}`` overrides."""
    store: Literal["memory", "redis"] | PyObject[BucketStore] = "memory"
    """Where the buckets live: ``memory`` (this process) or ``redis`` (shared by every
    process). From Python, a bucket store object."""
    redis_url: str | None = None
    """``redis://`` URL of the ``redis`` store (default: ``FLOWOPT_REDIS_URL``)."""
    prefix: str = "flowopt:rl:"
    """Prefix of the Redis keys."""
    fail_open: bool = True
    """Admit requests when the store is down (and record ``store_error``)."""
    default_output_tokens: int = Field(256, ge=0)
    """Output estimate when a request does not set ``max_tokens``."""
    anonymous: str = "anonymous"
    """Tenant name of requests that carry none."""

    @model_validator(mode="after")
    def _some_rate(self) -> TenantLimitsOptions:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("ratelimit needs requests_per_minute and/or tokens_per_minute")
        return self


def estimate_tokens(request: Request, default_output_tokens: int) -> int:
    """A cheap upper-ish estimate of a request's tokens (no tokenizer on the hot path)."""
    chars = len(request.prompt or "") + sum(len(m.text) + 4 for m in request.messages)
    return chars // 4 + 1 + (request.params.max_tokens or default_output_tokens)


class TenantLimits(MiddlewareBase):
    """Options: :class:`TenantLimitsOptions` (``requests_per_minute`` /
    ``tokens_per_minute``, ``burst_requests`` / ``burst_tokens``, ``per_tenant``,
    ``store`` / ``redis_url`` / ``prefix``, ``fail_open``, ``default_output_tokens``,
    ``anonymous``)."""

    name: ClassVar[str] = "ratelimit"
    options_model: ClassVar[type[TenantLimitsOptions]] = TenantLimitsOptions

    def __init__(self, options: TenantLimitsOptions | None = None, /, **kwargs: Any) -> None:
        self.options = opts = make_options(TenantLimitsOptions, options, kwargs, name=self.name)
        self.limits = {
            "requests": (opts.requests_per_minute, opts.burst_requests),
            "tokens": (opts.tokens_per_minute, opts.burst_tokens),
        }
        self.per_tenant = {t: v.model_dump(exclude_none=True) for t, v in opts.per_tenant.items()}
        self.fail_open = opts.fail_open
        self.default_output_tokens = opts.default_output_tokens
        self.anonymous = opts.anonymous
        store = opts.store
        if store == "memory":
            self.store: BucketStore = MemoryBuckets()
        elif store == "redis":
            url = opts.redis_url or os.environ.get("FLOWOPT_REDIS_URL")
            if not url:
                raise ConfigError(
                    "ratelimit store 'redis' needs redis_url (or FLOWOPT_REDIS_URL)",
                    hint="e.g. redis_url: redis://127.0.0.1:6379/0",
                )
            self.store = RedisBuckets(url, prefix=opts.prefix)
        else:
            self.store = store

    def _specs(self, tenant: str, tokens: float) -> list[BucketSpec]:
        over = self.per_tenant.get(tenant, {})
        out = []
        for kind, (per_min, burst) in self.limits.items():
            per_min = over.get(f"{kind}_per_minute", per_min)
            if per_min is None:
                continue
            cap = over.get(f"burst_{kind}", burst) or per_min
            cost = 1.0 if kind == "requests" else float(tokens)
            out.append(BucketSpec(f"{tenant}:{kind}", cost, per_min / 60.0, float(cap)))
        return out

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        tenant = request.tenant or self.anonymous
        estimate = estimate_tokens(request, self.default_output_tokens)
        specs = self._specs(tenant, estimate)
        store_error: str | None = None
        try:
            wait = await self.store.take(specs)
        except StoreError as exc:
            if not self.fail_open:
                raise
            store_error, wait = exc.message, 0.0
        if wait > 0:
            which = [s.key.rsplit(":", 1)[1] for s in specs]
            raise RateLimited(
                f"tenant {tenant!r} is over its limit ({'/'.join(which)} per minute)",
                reason="rate_limit",
                retry_after=round(wait, 3),
                request_id=request.request_id,
                hint=f"retry after {wait:.2f}s, or raise the tenant's limit",
            )
        try:
            response = await call_next(request)
        except BaseException:
            await self._settle(tenant, specs, estimate, 0)  # nothing was generated
            raise
        detail: dict[str, Any] = {"tenant": tenant, "estimated_tokens": estimate}
        if store_error:
            detail["store_error"] = store_error

        async def settle(final: Response) -> None:
            await self._settle(tenant, specs, estimate, final.usage.total_tokens)

        response = await when_final(response, settle)
        return response.with_decision(self.decision("admitted", **detail))

    async def _settle(
        self, tenant: str, specs: list[BucketSpec], estimate: int, actual: int
    ) -> None:
        """Refund or charge the difference between the estimate and the real usage."""
        tok = [s for s in specs if s.key.endswith(":tokens")]
        if not tok or actual == estimate:
            return
        delta = BucketSpec(tok[0].key, float(actual - estimate), tok[0].rate, tok[0].capacity)
        try:
            await self.store.adjust([delta])
        except StoreError:
            if not self.fail_open:
                raise

    async def aclose(self) -> None:
        await self.store.aclose()
