"""Redis as the shared *exact* tier: many app processes see each other's exact hits.

Why exact only: the Redis shipped by Debian has no vector search module, and an exact hit is
what Redis is best at (one GET, sub-millisecond over loopback). Semantic search for the
shared tier lives in Postgres + pgvector (:mod:`.postgres`).

Layout under ``prefix``: ``e:<exact_key>`` holds the entry as JSON with a Redis TTL equal to
the entry's; the sets ``t:<tenant>``, ``m:<model identity>`` and ``g:<tag>`` index the
keys for invalidation (stale members are harmless: deleting a missing key is a no-op).
Timeouts are short on purpose: a Redis that does not answer in half a second is treated as
down (a :class:`~flowopt.errors.StoreError`, so the request goes to the backend).
"""

from __future__ import annotations

import json
import time
from typing import Any

from flowopt.cache.stores.base import Candidate, Entry, StoreStats, Vector
from flowopt.errors import MissingDependencyError, StoreError

__all__ = ["RedisExactStore"]


class RedisExactStore:
    name = "redis"
    semantic = False
    blocking = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "flowopt:cache:",
        timeout_s: float = 0.5,
        **_: Any,
    ) -> None:
        try:
            import redis
        except ImportError as exc:
            raise MissingDependencyError("redis", "shared", "the Redis cache store") from exc
        self.url = url
        self.prefix = prefix
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._errors = (redis.RedisError, OSError)

    def _k(self, kind: str, value: str) -> str:
        return f"{self.prefix}{kind}:{value}"

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._errors as exc:
            raise StoreError(
                f"redis cache store {what} failed ({self.url}): {exc}",
                hint="is redis-server running? the cache carries on without it",
            ) from exc

    def get_exact(self, exact_key: str) -> Entry | None:
        raw = self._call("get", self._redis.get, self._k("e", exact_key))
        if raw is None:
            return None
        entry = _decode(raw)
        if entry is None or entry.expired():
            return None
        return entry

    def search(self, partition: str, vector: Vector, k: int) -> list[Candidate]:
        return []

    def put(self, entry: Entry) -> None:
        ttl = None
        if entry.expires_at is not None:
            ttl = max(1, int(entry.expires_at - time.time() + 0.999))

        def write() -> None:
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(self._k("e", entry.exact_key), _encode(entry), ex=ttl)
            pipe.sadd(self._k("t", entry.tenant), entry.exact_key)
            pipe.sadd(self._k("m", entry.model_identity), entry.exact_key)
            for tag in entry.tags:
                pipe.sadd(self._k("g", tag), entry.exact_key)
            pipe.execute()

        self._call("put", write)

    def invalidate(
        self,
        *,
        tenant: str | None = None,
        model_identity: str | None = None,
        tag: str | None = None,
    ) -> int:
        sets = []
        if tenant is not None:
            sets.append(self._k("t", tenant))
        if model_identity is not None:
            sets.append(self._k("m", model_identity))
        if tag is not None:
            sets.append(self._k("g", tag))
        if not sets:
            return 0

        def run() -> int:
            keys = [
                k.decode() if isinstance(k, bytes) else str(k) for k in self._redis.sinter(sets)
            ]
            if not keys:
                return 0
            n = int(self._redis.delete(*[self._k("e", k) for k in keys]))
            for s in sets:
                self._redis.srem(s, *keys)
            return n

        return int(self._call("invalidate", run))

    def clear(self) -> int:
        def run() -> int:
            n = 0
            batch: list[bytes] = []
            for key in self._redis.scan_iter(match=self.prefix + "*", count=500):
                if key.startswith((self.prefix + "e:").encode()):
                    n += 1
                batch.append(key)
                if len(batch) >= 500:
                    self._redis.delete(*batch)
                    batch = []
            if batch:
                self._redis.delete(*batch)
            return n

        return int(self._call("clear", run))

    def stats(self) -> StoreStats:
        def run() -> StoreStats:
            entries = sum(1 for _ in self._redis.scan_iter(match=self.prefix + "e:*", count=500))
            tenants: dict[str, int] = {}
            for key in self._redis.scan_iter(match=self.prefix + "t:*", count=500):
                tenants[key.decode()[len(self.prefix) + 2 :]] = int(self._redis.scard(key))
            return StoreStats(
                entries=entries, partitions=0, tenants=tenants, detail={"url": self.url}
            )

        result: StoreStats = self._call("stats", run)
        return result

    def close(self) -> None:
        self._redis.close()


def _encode(entry: Entry) -> str:
    return json.dumps(
        {
            "exact_key": entry.exact_key,
            "partition": entry.partition,
            "tenant": entry.tenant,
            "model_identity": entry.model_identity,
            "question": entry.question,
            "text": entry.text,
            "chunks": None if entry.chunks is None else list(entry.chunks),
            "response": entry.response,
            "tags": list(entry.tags),
            "created_at": entry.created_at,
            "expires_at": entry.expires_at,
        }
    )


def _decode(raw: bytes | str) -> Entry | None:
    try:
        d = json.loads(raw)
        return Entry.from_dict(d)
    except (ValueError, KeyError, TypeError):
        return None
