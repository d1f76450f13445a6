"""Resilience: small layers that keep a pipeline answering when models are slow,
rate-limited or down. Each is a middleware of its own (one idea per module); ``resilience``
composes them in the recommended order (see :mod:`flowopt.resilience.stack`).

    retry      retryable failures only, full-jitter backoff, Retry-After, retry budget
    breaker    per-endpoint cool-down (429 + Retry-After) and circuit breaker with probes
    fallback   another tier by name, then a stale answer marked stale
    deadline   one time budget per request, passed down to every hop
    ratelimit  per-tenant requests/min and tokens/min buckets (in-process or Redis)
    shed       bounded concurrency + priority queue per backend; typed, instant rejection
"""

from flowopt.resilience.backoff import Backoff, RetryBudget
from flowopt.resilience.breaker import Breaker
from flowopt.resilience.buckets import BucketSpec, MemoryBuckets, RedisBuckets
from flowopt.resilience.deadline import Deadline
from flowopt.resilience.fallback import Fallback, LastGoodAnswers, StaleSource
from flowopt.resilience.limits import TenantLimits
from flowopt.resilience.retry import Retry
from flowopt.resilience.shed import LoadShed
from flowopt.resilience.stack import Resilience

__all__ = [
    "Backoff",
    "Breaker",
    "BucketSpec",
    "Deadline",
    "Fallback",
    "LastGoodAnswers",
    "LoadShed",
    "MemoryBuckets",
    "RedisBuckets",
    "Resilience",
    "Retry",
    "RetryBudget",
    "StaleSource",
    "TenantLimits",
]
