"""Exponential backoff with full jitter, and the retry budget that caps retry load.

Why full jitter (``uniform(0, min(cap, base * 2**n))``): clients that failed together must
not retry together; AWS's analysis of backoff variants showed full jitter finishes the same
work with the fewest calls. Why a budget: per-request retry counts multiply load during an
outage (3 attempts = 3x traffic at the worst moment); a budget shared by all requests
bounds retries to a fraction of first attempts, like Finagle's and gRPC's retry budgets.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from pydantic import Field

from flowopt.errors import ConfigError
from flowopt.middleware.options import MiddlewareOptions

__all__ = ["Backoff", "RetryBudget", "RetryBudgetOptions"]


class Backoff(MiddlewareOptions):
    """Delay before retry ``n`` (1-based): ``uniform(0, min(cap, base * multiplier**(n-1)))``.
    A frozen value; a bad value raises ConfigError."""

    base: float = Field(0.1, ge=0)
    """Seconds: the ceiling of the first delay."""
    cap: float = Field(5.0, ge=0)
    """Seconds: no delay is longer than this (before Retry-After overrides it)."""
    multiplier: float = Field(2.0, ge=1)
    """Growth of the ceiling per retry."""

    def ceiling(self, retry: int) -> float:
        return float(min(self.cap, self.base * self.multiplier ** max(0, retry - 1)))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        return (rng or random).uniform(0.0, self.ceiling(retry))


class RetryBudgetOptions(MiddlewareOptions):
    """The knobs of a :class:`RetryBudget` (retry's ``budget`` option)."""

    ratio: float = Field(0.1, ge=0, le=1)
    """Retries allowed per first attempt in the window (0.1: at most 10% extra load)."""
    window_s: float = Field(10.0, gt=0)
    """Seconds of history the ratio is computed over."""
    min_per_window: int = Field(3, ge=0)
    """Retries always allowed per window, so a quiet service can still retry at all."""

    def build(self) -> RetryBudget:
        return RetryBudget(self.ratio, self.window_s, self.min_per_window)


@dataclass
class RetryBudget:
    """Retries allowed = ``ratio`` x first attempts in the last ``window_s`` seconds, plus
    ``min_per_window`` so a quiet service can still retry at all.

    During an outage every first attempt fails and asks for a retry; the budget admits at
    most ``ratio`` of them (10% extra load by default) and the rest fail fast, to be handled
    by fallback. Shared by every request through one middleware instance (per process).
    """

    ratio: float = 0.1
    window_s: float = 10.0
    min_per_window: int = 3
    _requests: deque[float] = field(default_factory=deque, repr=False)
    _retries: deque[float] = field(default_factory=deque, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.ratio <= 1 or self.window_s <= 0 or self.min_per_window < 0:
            raise ConfigError(
                f"retry budget needs 0 <= ratio <= 1, window_s > 0, min_per_window >= 0 "
                f"(got {self.ratio}, {self.window_s}, {self.min_per_window})",
                hint="e.g. budget: {ratio: 0.1, window_s: 10, min_per_window: 3}",
            )

    def _trim(self, now: float) -> None:
        edge = now - self.window_s
        while self._requests and self._requests[0] < edge:
            self._requests.popleft()
        while self._retries and self._retries[0] < edge:
            self._retries.popleft()

    def record_request(self) -> None:
        """Count one first attempt (deposits ``ratio`` of a retry)."""
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            self._requests.append(now)

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            allowed = self.min_per_window + self.ratio * len(self._requests)
            if len(self._retries) + 1 > allowed:
                return False
            self._retries.append(now)
            return True

    @property
    def retries_in_window(self) -> int:
        return len(self._retries)
