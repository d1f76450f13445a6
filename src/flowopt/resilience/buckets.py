"""Token buckets for per-tenant limits: in-process, and Redis-backed for many processes.

A bucket holds up to ``capacity`` units and refills at ``rate`` units per second. ``take``
is all-or-nothing over several buckets at once (a request needs a request-token *and* its
estimated LLM tokens; taking one without the other would leak budget), and answers how
long to wait when it refuses. ``adjust`` settles the difference once the real token count
is known and may drive a bucket negative: the tenant then waits that debt off.

The Redis store does the whole check-and-take in one Lua script using the server's clock,
so N app processes share one budget exactly, with no clock-skew between them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from flowopt.errors import MissingDependencyError, StoreError

__all__ = ["BucketSpec", "BucketStore", "MemoryBuckets", "RedisBuckets"]


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """One bucket of one tenant: ``key``, ``cost`` to take now, ``rate``/s, ``capacity``."""

    key: str
    cost: float
    rate: float
    capacity: float


@runtime_checkable
class BucketStore(Protocol):
    async def take(self, buckets: Sequence[BucketSpec]) -> float:
        """Take every cost or none; 0.0 when granted, else seconds until it could be."""
        ...

    async def adjust(self, buckets: Sequence[BucketSpec]) -> None:
        """Add ``-cost`` to each bucket unconditionally (settle estimates)."""
        ...

    async def aclose(self) -> None: ...


def _wait_for(level: float, spec: BucketSpec) -> float:
    need = min(spec.cost, spec.capacity)  # a request bigger than the bucket needs a full one
    if spec.cost <= 0 or level >= need:
        return 0.0
    return (need - level) / spec.rate if spec.rate > 0 else float("inf")


class MemoryBuckets:
    """Buckets in this process's memory (the default; one process, one budget)."""

    def __init__(self) -> None:
        self._levels: dict[str, tuple[float, float]] = {}
        self._lock = asyncio.Lock()

    def _level(self, spec: BucketSpec, now: float) -> float:
        level, ts = self._levels.get(spec.key, (spec.capacity, now))
        return min(spec.capacity, level + max(0.0, now - ts) * spec.rate)

    async def take(self, buckets: Sequence[BucketSpec]) -> float:
        async with self._lock:
            now = time.monotonic()
            levels = [self._level(b, now) for b in buckets]
            wait = max(
                (_wait_for(lv, b) for lv, b in zip(levels, buckets, strict=True)), default=0.0
            )
            if wait > 0:
                return wait
            for lv, b in zip(levels, buckets, strict=True):
                self._levels[b.key] = (lv - b.cost, now)
            return 0.0

    async def adjust(self, buckets: Sequence[BucketSpec]) -> None:
        async with self._lock:
            now = time.monotonic()
            for b in buckets:
                self._levels[b.key] = (min(b.capacity, self._level(b, now) - b.cost), now)

    async def aclose(self) -> None:
        return None


# KEYS: bucket keys. ARGV: mode ("take"|"adjust"), then cost, rate, capacity per key.
# Returns "0" when granted (or adjusted), else the seconds to wait, as a string
# (Lua numbers come back from Redis truncated to integers).
_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local mode = ARGV[1]
local levels = {}
local wait = 0
for i = 1, #KEYS do
  local cost = tonumber(ARGV[3 * i - 1])
  local rate = tonumber(ARGV[3 * i])
  local cap = tonumber(ARGV[3 * i + 1])
  local v = redis.call('HMGET', KEYS[i], 'level', 'ts')
  local level = tonumber(v[1])
  local ts = tonumber(v[2])
  if level == nil then level = cap; ts = now end
  level = math.min(cap, level + math.max(0, now - ts) * rate)
  levels[i] = level
  if mode == 'take' and cost > 0 then
    local need = math.min(cost, cap)
    if level < need then
      local w = (need - level) / rate
      if w > wait then wait = w end
    end
  end
end
if wait > 0 then return tostring(wait) end
for i = 1, #KEYS do
  local cost = tonumber(ARGV[3 * i - 1])
  local rate = tonumber(ARGV[3 * i])
  local cap = tonumber(ARGV[3 * i + 1])
  local level = math.min(cap, levels[i] - cost)
  redis.call('HSET', KEYS[i], 'level', tostring(level), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[i], math.ceil(cap / rate) * 2 + 60)
end
return '0'
"""


class RedisBuckets:
    """Buckets in Redis, shared by every process that uses the same ``url`` and ``prefix``.

    ``url`` is a ``redis://`` URL. Connection failures raise :class:`StoreError`; the
    limits layer decides whether to fail open (admit) or closed (refuse).
    """

    def __init__(self, url: str, *, prefix: str = "flowopt:rl:", timeout_s: float = 0.5) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise MissingDependencyError("redis", "shared", "Redis-backed rate limits") from None
        self.url = url
        self.prefix = prefix
        self._client: Any = aioredis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._script: Any = self._client.register_script(_LUA)

    async def _run(self, mode: str, buckets: Sequence[BucketSpec]) -> float:
        keys = [self.prefix + b.key for b in buckets]
        args: list[Any] = [mode]
        for b in buckets:
            args += [repr(float(b.cost)), repr(float(b.rate)), repr(float(b.capacity))]
        try:
            out = await self._script(keys=keys, args=args)
        except Exception as exc:  # redis raises many types; all mean "store unavailable"
            raise StoreError(
                f"rate-limit store at {self.url} failed: {type(exc).__name__}: {exc}",
                hint="check that redis-server is reachable; limits fail open by default",
            ) from None
        return float(out.decode() if isinstance(out, bytes) else out)

    async def take(self, buckets: Sequence[BucketSpec]) -> float:
        return await self._run("take", buckets)

    async def adjust(self, buckets: Sequence[BucketSpec]) -> None:
        await self._run("adjust", buckets)

    async def aclose(self) -> None:
        await self._client.aclose()
