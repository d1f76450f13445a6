"""In-memory store: a dict for the exact tier, one numpy matrix per partition for search.

Why it exists: it is the fastest store (an exact hit is a dict lookup) and the reference
implementation of the store rules, and the embedded GPTCache store uses it as its read
path. Brute-force search over one partition's vectors is a single ``matrix @ vector``;
for the tens of thousands of entries a partition holds in practice that takes well under a
millisecond, less than building an ANN index would save.

Thread-safe: one lock around every operation (lookups run in worker threads).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from flowopt.cache.stores.base import Candidate, Entry, StoreStats, Vector

__all__ = ["MemoryStore"]


class _Partition:
    """The vectors of one partition, grown by doubling, with a free list of rows."""

    __slots__ = ("keys", "matrix", "rows", "size")

    def __init__(self, dim: int) -> None:
        self.matrix = np.zeros((8, dim), dtype=np.float32)
        self.keys: list[str | None] = [None] * 8
        self.rows: dict[str, int] = {}
        self.size = 0

    def add(self, key: str, vec: Vector) -> None:
        row = self.rows.get(key)
        if row is None:
            if self.size == len(self.keys):
                self._compact_or_grow()
            row = self.size
            self.size += 1
        self.matrix[row] = vec
        self.keys[row] = key
        self.rows[key] = row

    def remove(self, key: str) -> None:
        row = self.rows.pop(key, None)
        if row is None:
            return
        last = self.size - 1
        if row != last:
            moved = self.keys[last]
            assert moved is not None
            self.matrix[row] = self.matrix[last]
            self.keys[row] = moved
            self.rows[moved] = row
        self.keys[last] = None
        self.matrix[last] = 0.0
        self.size -= 1

    def _compact_or_grow(self) -> None:
        n = len(self.keys) * 2
        grown = np.zeros((n, self.matrix.shape[1]), dtype=np.float32)
        grown[: self.size] = self.matrix[: self.size]
        self.matrix = grown
        self.keys.extend([None] * (n - len(self.keys)))

    def top(self, vec: Vector, k: int) -> list[tuple[str, float]]:
        if self.size == 0:
            return []
        scores = self.matrix[: self.size] @ vec
        if k >= self.size:
            order = np.argsort(-scores)
        else:
            part = np.argpartition(-scores, k)[:k]
            order = part[np.argsort(-scores[part])]
        out: list[tuple[str, float]] = []
        for i in order:
            key = self.keys[int(i)]
            assert key is not None
            out.append((key, float(scores[int(i)])))
        return out


class MemoryStore:
    """Bounded LRU store in process memory.

    ``max_entries`` bounds the size (least recently *used* is evicted first);
    ``on_evict`` is told the exact keys it drops (the embedded store uses it to keep its
    disk copy in step).
    """

    name = "memory"
    semantic = True
    blocking = False

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        dim: int = 384,
        on_evict: Callable[[list[Entry]], None] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.dim = dim
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._parts: dict[str, _Partition] = {}
        self._lock = threading.RLock()
        self._on_evict = on_evict
        self.evictions = 0

    # -- reads ---------------------------------------------------------------------------
    def get_exact(self, exact_key: str) -> Entry | None:
        with self._lock:
            entry = self._entries.get(exact_key)
            if entry is None:
                return None
            if entry.expired():
                self._drop(exact_key)
                return None
            self._entries.move_to_end(exact_key)
            return entry

    def search(self, partition: str, vector: Vector, k: int) -> list[Candidate]:
        with self._lock:
            part = self._parts.get(partition)
            if part is None:
                return []
            now = time.time()
            out: list[Candidate] = []
            for key, score in part.top(vector, k + 4):
                entry = self._entries[key]
                if entry.expired(now):
                    continue
                out.append(Candidate(entry, score))
                if len(out) == k:
                    break
            return out

    def touch(self, exact_key: str) -> None:
        """Mark an entry as used (LRU), e.g. after a semantic hit."""
        with self._lock:
            if exact_key in self._entries:
                self._entries.move_to_end(exact_key)

    # -- writes --------------------------------------------------------------------------
    def put(self, entry: Entry) -> None:
        evicted: list[Entry] = []
        with self._lock:
            old = self._entries.pop(entry.exact_key, None)
            if old is not None and old.partition != entry.partition:
                self._remove_vector(old)
            self._entries[entry.exact_key] = entry
            if entry.embedding is not None:
                part = self._parts.get(entry.partition)
                if part is None:
                    part = self._parts[entry.partition] = _Partition(self.dim)
                part.add(entry.exact_key, entry.embedding)
            while len(self._entries) > self.max_entries:
                key, victim = next(iter(self._entries.items()))
                self._drop(key)
                evicted.append(victim)
                self.evictions += 1
        if evicted and self._on_evict is not None:
            self._on_evict(evicted)

    def _remove_vector(self, entry: Entry) -> None:
        part = self._parts.get(entry.partition)
        if part is not None:
            part.remove(entry.exact_key)
            if part.size == 0:
                del self._parts[entry.partition]

    def _drop(self, key: str) -> Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._remove_vector(entry)
        return entry

    def remove(self, keys: list[str]) -> int:
        with self._lock:
            return sum(1 for k in keys if self._drop(k) is not None)

    def matching(
        self,
        *,
        tenant: str | None = None,
        model_identity: str | None = None,
        tag: str | None = None,
    ) -> list[str]:
        """Exact keys of the entries that match every given criterion."""
        if tenant is None and model_identity is None and tag is None:
            return []
        with self._lock:
            return [
                k
                for k, e in self._entries.items()
                if (tenant is None or e.tenant == tenant)
                and (model_identity is None or e.model_identity == model_identity)
                and (tag is None or tag in e.tags)
            ]

    def invalidate(
        self,
        *,
        tenant: str | None = None,
        model_identity: str | None = None,
        tag: str | None = None,
    ) -> int:
        keys = self.matching(tenant=tenant, model_identity=model_identity, tag=tag)
        return self.remove(keys)

    def purge_expired(self) -> int:
        now = time.time()
        with self._lock:
            keys = [k for k, e in self._entries.items() if e.expired(now)]
        return self.remove(keys)

    def clear(self) -> int:
        with self._lock:
            n = len(self._entries)
            self._entries.clear()
            self._parts.clear()
            return n

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def stats(self) -> StoreStats:
        with self._lock:
            tenants: dict[str, int] = {}
            for e in self._entries.values():
                tenants[e.tenant] = tenants.get(e.tenant, 0) + 1
            return StoreStats(
                entries=len(self._entries),
                partitions=len(self._parts),
                tenants=tenants,
                detail={"max_entries": self.max_entries, "evictions": self.evictions},
            )

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        """Nothing to release."""
