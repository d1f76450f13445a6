"""Replicas of one backend and least-outstanding balancing over them.

Apart from the HTTP backend because the choice of endpoint is its own small policy:
least outstanding requests first, round robin among equals, never an endpoint the
resilience layer asked to avoid (``Request.avoid``) while another one is usable. The
steering terminal refuses before a backend is called when every endpoint is avoided.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence

__all__ = ["Replica", "Replicas"]


class Replica:
    """One endpoint and how many requests it is serving now."""

    __slots__ = ("outstanding", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        self.outstanding = 0


class Replicas:
    """The endpoints of one backend, in configuration order."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.items = [Replica(u) for u in urls]
        self._rr = itertools.count()

    def pick(self, avoid: Mapping[str, float] | None = None) -> Replica:
        """The usable replica with the fewest outstanding requests (``avoid``:
        ``{url: monotonic_until}``; ignored when it would leave none)."""
        replicas = self.items
        if avoid and len(replicas) > 1:
            now = time.monotonic()
            usable = [r for r in replicas if avoid.get(r.url, 0.0) <= now]
            replicas = usable or replicas
        if len(replicas) == 1:
            return replicas[0]
        low = min(r.outstanding for r in replicas)
        candidates = [r for r in replicas if r.outstanding == low]
        return candidates[next(self._rr) % len(candidates)]
