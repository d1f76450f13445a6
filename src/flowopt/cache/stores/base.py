"""The store protocol: what every cache store (embedded, in-memory, shared) must do.

Why this shape: the middleware owns *policy* (what to store, when a hit is safe) and a store
owns *data* (persist, search, evict, expire). The contract is small so that a new backend
is an afternoon's work and can be registered by entry point (group ``flowopt.stores``).

Rules every store keeps (the conformance tests in ``tests/cache/test_stores.py`` check them):

- Search is *inside one partition*: a store must never return an entry of another partition.
- An expired entry (``expires_at`` passed) is never returned, even before it is purged.
- ``put`` with an existing exact key replaces the entry.
- A failing backend raises :class:`~flowopt.errors.StoreError`; the middleware turns that
  into a miss and records it on the span. Stores never swallow their own failures.

Stores are synchronous: the in-memory ones answer in microseconds, and the middleware runs
blocking ones (sqlite, Postgres, Redis) in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["Candidate", "Entry", "Store", "StoreStats"]

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached answer.

    ``question`` is the last user text it answered (what the semantic tier compares with);
    ``chunks`` are the text pieces of the original stream (None for a non-streamed answer)
    so a streamed hit replays with the same chunk shape. ``response`` is the JSON-ready
    rest of the response (model, usage, finish reason, logprobs) needed to rebuild it.
    """

    exact_key: str
    partition: str
    tenant: str
    model_identity: str
    question: str
    text: str
    chunks: tuple[str, ...] | None = None
    response: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    created_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    embedding: Vector | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, embedding: Vector | None = None) -> Entry:
        """Rebuild an entry from the plain fields every store serialises (raises
        KeyError/TypeError/ValueError on a malformed record; stores treat that as a miss)."""
        expires = d.get("expires_at")
        return cls(
            exact_key=d["exact_key"],
            partition=d["partition"],
            tenant=d["tenant"],
            model_identity=d["model_identity"],
            question=d["question"],
            text=d["text"],
            chunks=None if d.get("chunks") is None else tuple(d["chunks"]),
            response=d.get("response") or {},
            tags=tuple(d.get("tags") or ()),
            created_at=float(d["created_at"]),
            expires_at=None if expires is None else float(expires),
            embedding=embedding,
        )

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (now or time.time()) - self.created_at)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A semantic search result: an entry and its cosine similarity to the query."""

    entry: Entry
    score: float


@dataclass(frozen=True, slots=True)
class StoreStats:
    entries: int
    partitions: int
    tenants: dict[str, int]
    detail: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Store(Protocol):
    """A cache store. ``semantic`` is False for exact-only stores (e.g. Redis)."""

    name: str
    semantic: bool

    def get_exact(self, exact_key: str) -> Entry | None:
        """The live entry stored under ``exact_key`` or None."""
        ...

    def search(self, partition: str, vector: Vector, k: int) -> list[Candidate]:
        """The ``k`` live entries of ``partition`` nearest to the unit ``vector``, best
        first. Exact-only stores return []."""
        ...

    def put(self, entry: Entry) -> None:
        """Store (or replace) ``entry``; may evict others to stay within the size bound."""
        ...

    def invalidate(
        self,
        *,
        tenant: str | None = None,
        model_identity: str | None = None,
        tag: str | None = None,
    ) -> int:
        """Remove entries matching *all* given criteria; returns how many. No criteria:
        removes nothing (use :meth:`clear`)."""
        ...

    def clear(self) -> int:
        """Remove everything; returns how many entries there were."""
        ...

    def stats(self) -> StoreStats: ...

    def close(self) -> None: ...
