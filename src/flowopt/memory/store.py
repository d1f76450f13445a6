"""Long-term memory storage: Mem0's ``Memory`` configured for a machine with no cloud.

Why Mem0 and what flowopt adds around it. Mem0 owns storage (vectors + payloads in an
embedded qdrant on disk, change history in sqlite) and its own extraction path; flowopt
configures it with the local vLLM server as its LLM and the packaged MiniLM as its embedder
(the same ONNX runtime the semantic cache uses, through Mem0's LangChain embedder
provider), and adds what Mem0 leaves to the app:

- **Keys that cannot leak.** Mem0 scopes by ``user_id``/``agent_id``/``run_id`` strings
  only. Every id flowopt gives Mem0 is ``tenant/id`` (:class:`MemoryKey`), so two tenants
  with a user called ``alice`` never share a memory, and every search filters on the key.
- **Provenance.** Each memory's metadata holds the source turn ids, the time and the scope
  (``flowopt_sources``, ``flowopt_at``, ``flowopt_scope``, ``flowopt_tenant``).
- **Forget means gone.** Mem0's ``delete_all`` leaves the deleted text in its history table
  (a ``DELETE`` row keeps ``old_memory``); :meth:`LongTermStore.forget` also removes those
  rows and the conversation snippets Mem0 keeps per session.

Qdrant and not faiss: Mem0's faiss store filters after a top-``2k`` search over everyone's
vectors, so with many users a user's own memories fall out of the results; qdrant filters
inside the search.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowopt.errors import ConfigError, MissingDependencyError

__all__ = ["LongTermStore", "MemoryKey", "Recalled", "default_data_dir"]

_PURPOSE = "long-term memory (Mem0)"


def default_data_dir() -> Path:
    """``$FLOWOPT_MEMORY_DIR`` or ``~/.cache/flowopt/memory``."""
    env = os.environ.get("FLOWOPT_MEMORY_DIR")
    return Path(env) if env else Path.home() / ".cache" / "flowopt" / "memory"


def _safe(part: str, what: str) -> str:
    if not part or any(c.isspace() for c in part) or "/" in part:
        raise ConfigError(
            f"memory {what} {part!r} is not a usable id",
            hint=f"a {what} id must be non-empty, without whitespace or '/'",
        )
    return part


@dataclass(frozen=True)
class MemoryKey:
    """Whose memories: always a tenant, plus a user, an agent and/or a run (session)."""

    tenant: str
    user: str | None = None
    agent: str | None = None
    run: str | None = None

    def __post_init__(self) -> None:
        _safe(self.tenant, "tenant")
        for what in ("user", "agent", "run"):
            value = getattr(self, what)
            if value is not None:
                _safe(value, what)
        if self.user is None and self.agent is None and self.run is None:
            raise ConfigError(
                "a memory key needs a user, an agent or a run besides the tenant",
                hint="pass user=... (or agent=/run=)",
            )

    def mem0_ids(self) -> dict[str, str]:
        """The ids Mem0 filters on, each prefixed with the tenant."""
        out: dict[str, str] = {}
        for what in ("user", "agent", "run"):
            value = getattr(self, what)
            if value is not None:
                out[f"{what}_id"] = f"{self.tenant}/{value}"
        return out

    @property
    def scope(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.mem0_ids().items())


@dataclass(frozen=True)
class Recalled:
    """One memory as recall and ``list`` return it, with its provenance."""

    id: str
    text: str
    score: float | None
    sources: tuple[str, ...]
    at: str | None
    scope: str | None

    @classmethod
    def from_mem0(cls, item: dict[str, Any]) -> Recalled:
        meta = item.get("metadata") or {}
        return cls(
            id=str(item["id"]),
            text=str(item.get("memory", "")),
            score=item.get("score"),
            sources=tuple(str(s) for s in meta.get("flowopt_sources") or ()),
            at=meta.get("flowopt_at") or item.get("created_at"),
            scope=meta.get("flowopt_scope"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "memory": self.text,
            "score": self.score,
            "sources": list(self.sources),
            "at": self.at,
            "scope": self.scope,
        }


def _provenance(key: MemoryKey, sources: Sequence[str], at: str) -> dict[str, Any]:
    """The metadata every stored memory carries: where it came from, when, whose."""
    return {
        "flowopt_sources": list(sources),
        "flowopt_at": at,
        "flowopt_scope": key.scope,
        "flowopt_tenant": key.tenant,
    }


def _embeddings_adapter(runtime: str) -> Any:
    """flowopt's MiniLM embedder as a LangChain ``Embeddings`` (Mem0's ``langchain``
    embedder provider takes one)."""
    from langchain_core.embeddings import Embeddings

    from flowopt.cache.embedder import MiniLMEmbedder

    class FlowoptMiniLM(Embeddings):
        def __init__(self) -> None:
            self.inner = MiniLMEmbedder(runtime=runtime)  # type: ignore[arg-type]

        def embed_query(self, text: str) -> list[float]:
            return [float(x) for x in self.inner.embed(text)]

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[float(x) for x in v] for v in self.inner.embed_many(texts)]

    return FlowoptMiniLM()


class LongTermStore:
    """Mem0 ``Memory`` under ``data_dir`` (see the module docstring). Blocking: call it
    from a thread (the middleware does). Thread-safe for its own calls."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        llm_base_url: str | None,
        llm_model: str | None,
        collection: str = "flowopt_memory",
        embedder_runtime: str = "auto",
        postgres_url: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.postgres_url = postgres_url
        self.collection = collection
        self.llm_base_url = llm_base_url
        self.llm_model = llm_model
        self._runtime = embedder_runtime
        self._memory: Any = None
        self._lock = threading.Lock()

    def open(self) -> Any:
        """Build Mem0's ``Memory`` once (loads the embedder, opens qdrant and sqlite)."""
        if self._memory is not None:
            return self._memory
        with self._lock:
            if self._memory is None:
                self._memory = self._build()
        return self._memory

    def _build(self) -> Any:
        os.environ.setdefault("MEM0_TELEMETRY", "False")
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        os.environ.setdefault("MEM0_DIR", str(self.data_dir / "mem0"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            from mem0 import Memory
        except ImportError as exc:
            raise MissingDependencyError("mem0", "memory", _PURPOSE) from exc
        llm: dict[str, Any] = {
            "provider": "vllm",
            "config": {"temperature": 0.0, "max_tokens": 256},
        }
        if self.llm_base_url:
            base = self.llm_base_url.rstrip("/")
            llm["config"]["vllm_base_url"] = base if base.endswith("/v1") else base + "/v1"
        if self.llm_model:
            llm["config"]["model"] = self.llm_model
        embeddings = _embeddings_adapter(self._runtime)
        config = {
            "llm": llm,
            "embedder": {
                "provider": "langchain",
                "config": {"model": embeddings, "embedding_dims": 384},
            },
            "vector_store": self._vector_store(),
            "history_db_path": str(self.data_dir / "history.db"),
        }
        memory = Memory.from_config(config)
        # load the embedding model now, not on the first request's recall (its timeout)
        embeddings.inner.load()
        return memory

    def _vector_store(self) -> dict[str, Any]:
        """Embedded qdrant on disk (one process), or pgvector on a shared Postgres (many
        processes and hosts see the same memories; HNSW index, filters inside the query)."""
        if self.postgres_url:
            try:
                import psycopg_pool  # noqa: F401  (Mem0's pgvector store needs the pool)
            except ImportError as exc:
                raise MissingDependencyError("psycopg_pool", "memory", _PURPOSE) from exc
            return {
                "provider": "pgvector",
                "config": {
                    "collection_name": self.collection,
                    "embedding_model_dims": 384,
                    "connection_string": self.postgres_url,
                    "hnsw": True,
                },
            }
        return {
            "provider": "qdrant",
            "config": {
                "collection_name": self.collection,
                "embedding_model_dims": 384,
                "path": str(self.data_dir / "qdrant"),
                "on_disk": True,
            },
        }

    # -- reads ------------------------------------------------------------------------
    def search(
        self, key: MemoryKey, query: str, *, top_k: int = 10, min_score: float = 0.0
    ) -> list[Recalled]:
        """The key's memories closest to ``query``, best first."""
        mem = self.open()
        found = mem.search(query, top_k=top_k, filters=key.mem0_ids(), threshold=min_score)
        return [Recalled.from_mem0(r) for r in found.get("results", [])]

    def memories(self, key: MemoryKey, *, limit: int = 1000) -> list[Recalled]:
        """All of the key's memories (Mem0's ``get_all``)."""
        mem = self.open()
        found = mem.get_all(filters=key.mem0_ids(), top_k=limit)
        return [Recalled.from_mem0(r) for r in found.get("results", [])]

    def history_rows(self, key: MemoryKey) -> int:
        """Rows of Mem0's history that still mention any of the key's memories (0 after
        :meth:`forget`): for audits and the forget test."""
        mem = self.open()
        ids = self._ids_seen(key)
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        with mem.db._lock:
            cur = mem.db.connection.execute(
                f"SELECT COUNT(*) FROM history WHERE memory_id IN ({marks})", tuple(ids)
            )
            return int(cur.fetchone()[0])

    # -- writes -----------------------------------------------------------------------
    def add_facts(
        self, key: MemoryKey, facts: Sequence[str], *, sources: Sequence[str], at: str
    ) -> list[str]:
        """Store ``facts`` verbatim (no second LLM pass) with their provenance."""
        mem = self.open()
        ids: list[str] = []
        meta = _provenance(key, sources, at)
        existing = {r.text.strip().lower() for r in self.search(key, " ".join(facts), top_k=50)}
        for fact in facts:
            if fact.strip().lower() in existing:
                continue
            out = mem.add(
                [{"role": "user", "content": fact}], infer=False, metadata=meta, **key.mem0_ids()
            )
            ids.extend(str(r["id"]) for r in out.get("results", []))
        self._remember_ids(key, ids)
        return ids

    def add_episodes(self, key: MemoryKey, episodes: Sequence[tuple[str, str, str]]) -> list[str]:
        """Store turns verbatim, one memory each (``(turn id, text, time)``), marked
        ``flowopt_kind: episode``: episodic memory, no LLM involved. Each is its own
        provenance, so recall of an episode is evidence by construction."""
        mem = self.open()
        ids: list[str] = []
        for turn_id, text, at in episodes:
            meta = _provenance(key, [turn_id], at) | {"flowopt_kind": "episode"}
            out = mem.add(
                [{"role": "user", "content": text}], infer=False, metadata=meta, **key.mem0_ids()
            )
            ids.extend(str(r["id"]) for r in out.get("results", []))
        self._remember_ids(key, ids)
        return ids

    def add_with_mem0(
        self, key: MemoryKey, messages: list[dict[str, str]], *, sources: Sequence[str], at: str
    ) -> list[str]:
        """Mem0's own extraction (``add(infer=True)``, its ~7.7k-token prompt)."""
        mem = self.open()
        meta = _provenance(key, sources, at)
        out = mem.add(messages, metadata=meta, **key.mem0_ids())
        ids = [str(r["id"]) for r in out.get("results", [])]
        self._remember_ids(key, ids)
        return ids

    def forget(self, key: MemoryKey) -> int:
        """Delete the key's memories from the vector store, and every trace of them from
        Mem0's history and message tables. Returns how many memories were deleted."""
        mem = self.open()
        listed = self.memories(key, limit=100_000)
        ids = {r.id for r in listed} | set(self._ids_seen(key))
        if listed:
            mem.delete_all(**key.mem0_ids())
        scope_parts = [f"{k}={v}" for k, v in sorted(key.mem0_ids().items())]
        with mem.db._lock:
            conn = mem.db.connection
            if ids:
                marks = ",".join("?" * len(ids))
                conn.execute(f"DELETE FROM history WHERE memory_id IN ({marks})", tuple(ids))
            scopes = [r[0] for r in conn.execute("SELECT DISTINCT session_scope FROM messages")]
            for scope in scopes:  # exact parts: "user_id=t/u" must not match "user_id=t/u2"
                if set(scope_parts) & set(str(scope).split("&")):
                    conn.execute("DELETE FROM messages WHERE session_scope = ?", (scope,))
            self._has_ids_table(conn)
            conn.execute("DELETE FROM flowopt_ids WHERE scope = ?", (key.scope,))
            conn.commit()
        return len(listed)

    # -- ids ever written per key, so history rows of deleted memories can be found ----
    def _has_ids_table(self, conn: Any) -> bool:
        conn.execute("CREATE TABLE IF NOT EXISTS flowopt_ids (scope TEXT, memory_id TEXT)")
        return True

    def _remember_ids(self, key: MemoryKey, ids: Sequence[str]) -> None:
        if not ids:
            return
        mem = self.open()
        with mem.db._lock:
            conn = mem.db.connection
            self._has_ids_table(conn)
            conn.executemany(
                "INSERT INTO flowopt_ids (scope, memory_id) VALUES (?, ?)",
                [(key.scope, i) for i in ids],
            )
            conn.commit()

    def _ids_seen(self, key: MemoryKey) -> list[str]:
        mem = self.open()
        with mem.db._lock:
            conn = mem.db.connection
            self._has_ids_table(conn)
            rows = conn.execute(
                "SELECT memory_id FROM flowopt_ids WHERE scope = ?", (key.scope,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        mem, self._memory = self._memory, None
        if mem is not None:
            mem.close()
