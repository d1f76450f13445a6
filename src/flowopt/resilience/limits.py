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
from typing import Any, ClassVar

from flowopt.errors import ConfigError, RateLimited, StoreError
from flowopt.middleware.base import CallNext, MiddlewareBase
from flowopt.resilience.buckets import BucketSpec, BucketStore, MemoryBuckets, RedisBuckets
from flowopt.stream import when_final
from flowopt.types import Request, Response

__all__ = ["TenantLimits", "estimate_tokens"]


def estimate_tokens(request: Request, default_output_tokens: int) -> int:
    """A cheap upper-ish estimate of a request's tokens (no tokenizer on the hot path)."""
    chars = len(request.prompt or "") + sum(len(m.content) + 4 for m in request.messages)
    return chars // 4 + 1 + (request.params.max_tokens or default_output_tokens)


class TenantLimits(MiddlewareBase):
    """Options:

    - ``requests_per_minute`` / ``tokens_per_minute``: the refill rates (either may be
      omitted; at least one is required).
    - ``burst_requests`` / ``burst_tokens``: bucket sizes (default: one minute's worth).
    - ``per_tenant``: ``{tenant: {requests_per_minute: .., tokens_per_minute: ..}}`` overrides.
    - ``store``: ``memory`` (default) or ``redis``; ``redis_url`` (or ``FLOWOPT_REDIS_URL``);
      ``prefix`` for the Redis keys.
    - ``fail_open`` (true): admit when the store is down.
    - ``default_output_tokens`` (256): output estimate when ``max_tokens`` is unset.
    - ``anonymous`` ("anonymous"): the tenant of requests that carry none.
    """

    name: ClassVar[str] = "ratelimit"

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        burst_requests: float | None = None,
        burst_tokens: float | None = None,
        per_tenant: dict[str, dict[str, float]] | None = None,
        store: str | BucketStore = "memory",
        redis_url: str | None = None,
        prefix: str = "flowopt:rl:",
        fail_open: bool = True,
        default_output_tokens: int = 256,
        anonymous: str = "anonymous",
    ) -> None:
        if requests_per_minute is None and tokens_per_minute is None:
            raise ConfigError(
                "ratelimit needs requests_per_minute and/or tokens_per_minute",
                hint="e.g. ratelimit: {requests_per_minute: 60, tokens_per_minute: 20000}",
            )
        for label, v in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
        ):
            if v is not None and v <= 0:
                raise ConfigError(f"{label} must be > 0, got {v}", hint="per minute, e.g. 60")
        self.limits = {
            "requests": (requests_per_minute, burst_requests),
            "tokens": (tokens_per_minute, burst_tokens),
        }
        self.per_tenant = {t: dict(v) for t, v in (per_tenant or {}).items()}
        self.fail_open = fail_open
        self.default_output_tokens = default_output_tokens
        self.anonymous = anonymous
        if isinstance(store, str):
            if store == "memory":
                self.store: BucketStore = MemoryBuckets()
            elif store == "redis":
                url = redis_url or os.environ.get("FLOWOPT_REDIS_URL")
                if not url:
                    raise ConfigError(
                        "ratelimit store 'redis' needs redis_url (or FLOWOPT_REDIS_URL)",
                        hint="e.g. redis_url: redis://127.0.0.1:6379/0",
                    )
                self.store = RedisBuckets(url, prefix=prefix)
            else:
                raise ConfigError(
                    f"unknown ratelimit store {store!r}", hint="use 'memory' or 'redis'"
                )
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
