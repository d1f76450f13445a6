"""The embedded default store, built on GPTCache's core: sqlite + faiss data manager and
its eviction manager.

Why this split of work: GPTCache 0.1.44 brings durable storage (its SQLAlchemy sqlite
scalar store), a faiss vector index kept in step with it, and LRU/LFU/FIFO eviction with
soft deletes. It does *not* bring a partition filter in search (its ``Session`` is not
isolation) nor TTL at write time. So GPTCache owns durability and eviction, and lookups
are answered from an in-memory mirror (:class:`MemoryStore`) that is partitioned by key,
loaded from sqlite when the store opens and kept in step on every write and eviction.
A lookup never searches across partitions, and an exact hit is a dict lookup.

GPTCache installs missing optional modules with ``pip`` at run time
(``gptcache.utils._check_library``). That is never acceptable in production, so before any
GPTCache module is imported its installer is replaced by one that raises
:class:`~flowopt.errors.MissingDependencyError`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from flowopt.cache.stores.base import Candidate, Entry, StoreStats, Vector
from flowopt.cache.stores.memory import MemoryStore
from flowopt.errors import MissingDependencyError, StoreError

__all__ = ["GPTCacheStore", "forbid_runtime_pip"]

_FORMAT = "flowopt-cache/1"


def forbid_runtime_pip() -> None:
    """Make GPTCache's run-time ``pip install`` raise instead (idempotent)."""
    try:
        import gptcache.utils as gutils
        import gptcache.utils.dependency_control as dc
    except ImportError as exc:
        raise MissingDependencyError("gptcache", "cache", "the embedded cache store") from exc

    def _refuse(package: str, warn: bool = False) -> None:
        del warn
        raise MissingDependencyError(
            package, "cache", f"GPTCache (it tried to pip-install {package!r} at run time)"
        )

    dc.prompt_install = _refuse
    gutils.prompt_install = _refuse  # type: ignore[attr-defined]


class GPTCacheStore:
    """Persistent store in ``path`` (``sqlite.db`` + ``faiss.index``).

    ``max_entries`` is the size bound enforced by GPTCache's eviction manager
    (``eviction``: ``LRU``, ``LFU``, ``FIFO`` or ``RR``).
    """

    name = "gptcache"
    semantic = True
    blocking = True

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_entries: int = 10_000,
        eviction: str = "LRU",
        dim: int = 384,
    ) -> None:
        forbid_runtime_pip()
        for module in ("sqlalchemy", "faiss", "cachetools"):
            try:
                __import__(module)
            except ImportError as exc:
                raise MissingDependencyError(module, "cache", "the embedded cache store") from exc
        with warnings.catch_warnings():
            # GPTCache 0.1.44 uses SQLAlchemy 1.x spellings; harmless, and not ours to fix.
            warnings.simplefilter("ignore")
            from gptcache.manager import CacheBase, VectorBase, get_data_manager
            from gptcache.manager.eviction import EvictionBase
            from gptcache.manager.scalar_data.base import CacheData
            from gptcache.manager.scalar_data.sql_storage import SQLStorage  # noqa: F401
            from gptcache.manager.vector_data.base import VectorData

        self._cache_data = CacheData
        self._vector_data = VectorData

        root = Path(path) if path is not None else Path.home() / ".cache" / "flowopt" / "cache"
        root.mkdir(parents=True, exist_ok=True)
        self.path = root
        self.dim = dim
        self.max_entries = max_entries
        self._lock = threading.RLock()
        self._ids: dict[str, int] = {}
        self._keys: dict[int, str] = {}
        self._mem = MemoryStore(max_entries=max_entries * 2 + 16, dim=dim)
        self.evictions = 0
        self._pending: list[Any] = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scalar = CacheBase("sqlite", sql_url=f"sqlite:///{root / 'sqlite.db'}")
            vector = VectorBase(
                "faiss", dimension=dim, index_path=str(root / "faiss.index"), top_k=1
            )
            evict = EvictionBase(
                "memory",
                maxsize=max_entries,
                clean_size=max(1, max_entries // 10),
                policy=eviction,
                on_evict=self._on_evict,
            )
            self._dm = get_data_manager(scalar, vector, None, evict)
            if self._pending:
                self._dm._clear(self._pending)
                self._pending = []
            self._tune_sqlite()
            self._load()
        except MissingDependencyError:
            raise
        except Exception as exc:
            raise StoreError(
                f"cannot open the embedded cache store at {root}: {exc}",
                hint="check the directory is writable; `flowopt cache clear` resets it",
            ) from exc

    # -- GPTCache plumbing ---------------------------------------------------------------
    def _tune_sqlite(self) -> None:
        """WAL + normal sync: a cache can lose its last write on power loss, never corrupt."""
        engine = getattr(self._dm.s, "_engine", None)
        if engine is None:
            return
        from sqlalchemy import text

        with engine.connect() as conn:
            conn.execute(text("PRAGMA journal_mode=WAL"))
            conn.execute(text("PRAGMA synchronous=NORMAL"))
            conn.commit()

    def _load(self) -> None:
        """Rebuild the in-memory mirror from sqlite (entries that are not soft-deleted)."""
        for sid in self._dm.s.get_ids(deleted=False):
            data = self._dm.s.get_data_by_id(sid)
            if data is None:
                continue
            entry = _decode(data)
            if entry is None or entry.expired():
                continue
            self._index(int(sid), entry)

    def _index(self, sid: int, entry: Entry) -> None:
        old = self._ids.get(entry.exact_key)
        if old is not None and old != sid:
            self._keys.pop(old, None)
        self._ids[entry.exact_key] = sid
        self._keys[sid] = entry.exact_key
        self._mem.put(entry)

    def _on_evict(self, ids: list[Any]) -> None:
        """GPTCache's eviction callback: soft-delete in sqlite, drop from the mirror."""
        if not ids:
            return
        if not hasattr(self, "_dm"):  # evicting while GPTCache opens: replay it after
            self._pending.extend(ids)
            return
        self._dm._clear(ids)
        keys = [self._keys.pop(int(i), None) for i in ids]
        dropped = [k for k in keys if k is not None]
        for k in dropped:
            self._ids.pop(k, None)
        self.evictions += self._mem.remove(dropped)

    def _delete_ids(self, ids: list[int]) -> None:
        if not ids:
            return
        self._dm.s.mark_deleted(ids)
        self._dm.s.clear_deleted_data()
        self._dm.v.delete(ids)
        for sid in ids:
            key = self._keys.pop(sid, None)
            if key is not None:
                self._ids.pop(key, None)

    # -- the store protocol --------------------------------------------------------------
    def get_exact(self, exact_key: str) -> Entry | None:
        entry = self._mem.get_exact(exact_key)
        if entry is not None:
            sid = self._ids.get(exact_key)
            if sid is not None:
                self._dm.eviction_base.get(sid)
        return entry

    def search(self, partition: str, vector: Vector, k: int) -> list[Candidate]:
        return self._mem.search(partition, vector, k)

    def touch(self, exact_key: str) -> None:
        sid = self._ids.get(exact_key)
        if sid is not None:
            self._dm.eviction_base.get(sid)
        self._mem.touch(exact_key)

    def put(self, entry: Entry) -> None:
        vec = entry.embedding
        if vec is None:
            vec = np.zeros(self.dim, dtype=np.float32)
            vec[0] = 1.0  # exact-only entry: a placeholder GPTCache can normalise
        with self._lock:
            try:
                old = self._ids.get(entry.exact_key)
                if old is not None:
                    self._delete_ids([old])
                question, answer = _encode(entry)
                unit = (np.asarray(vec, dtype=np.float32) / float(np.linalg.norm(vec))).astype(
                    np.float32
                )
                # SSDataManager.import_data, unrolled to learn the new row id.
                sid = int(
                    self._dm.s.batch_insert(
                        [self._cache_data(question=question, answers=answer, embedding_data=unit)]
                    )[0]
                )
                self._dm.v.mul_add([self._vector_data(id=sid, data=unit)])
                self._dm.eviction_base.put([sid])
            except Exception as exc:
                raise StoreError(f"embedded cache store write failed: {exc}") from exc
            self._index(sid, entry)

    def invalidate(
        self,
        *,
        tenant: str | None = None,
        model_identity: str | None = None,
        tag: str | None = None,
    ) -> int:
        with self._lock:
            keys = self._mem.matching(tenant=tenant, model_identity=model_identity, tag=tag)
            ids = [self._ids[k] for k in keys if k in self._ids]
            self._delete_ids(ids)
            self._dm.v.flush()
            return self._mem.remove(keys)

    def clear(self) -> int:
        with self._lock:
            ids = list(self._keys)
            n = len(self._mem)
            self._delete_ids(ids)
            self._dm.v.flush()
            self._mem.clear()
            return n

    def entries(self) -> list[Entry]:
        """Every live entry (the in-memory mirror of sqlite): for exporters, not lookups."""
        now = time.time()
        return [e for e in self._mem.entries() if not e.expired(now)]

    def stats(self) -> StoreStats:
        base = self._mem.stats()
        return StoreStats(
            entries=base.entries,
            partitions=base.partitions,
            tenants=base.tenants,
            detail={
                "path": str(self.path),
                "max_entries": self.max_entries,
                "evictions": self.evictions,
                "policy": self._dm.eviction_base.policy,
                "vectors": self._dm.v.count(),
            },
        )

    def close(self) -> None:
        with self._lock:
            self._dm.flush()


def _encode(entry: Entry) -> tuple[str, str]:
    question = json.dumps(
        {
            "format": _FORMAT,
            "exact_key": entry.exact_key,
            "partition": entry.partition,
            "tenant": entry.tenant,
            "model_identity": entry.model_identity,
            "question": entry.question,
            "tags": list(entry.tags),
            "created_at": entry.created_at,
            "expires_at": entry.expires_at,
            "has_embedding": entry.embedding is not None,
        }
    )
    answer = json.dumps(
        {
            "text": entry.text,
            "chunks": None if entry.chunks is None else list(entry.chunks),
            "response": entry.response,
        }
    )
    return question, answer


def _decode(data: Any) -> Entry | None:
    try:
        q = json.loads(data.question if isinstance(data.question, str) else data.question.content)
        raw_answer = data.answers[0]
        a = json.loads(getattr(raw_answer, "answer", raw_answer))
    except (ValueError, AttributeError, IndexError, TypeError):
        return None
    if not isinstance(q, dict) or q.get("format") != _FORMAT:
        return None
    emb = None
    if q.get("has_embedding") and data.embedding_data is not None:
        emb = np.asarray(data.embedding_data, dtype=np.float32).reshape(-1)
    try:
        return Entry.from_dict({**q, **a}, embedding=emb)
    except (KeyError, TypeError, ValueError):
        return None
