"""Postgres + pgvector: the shared store for many app processes (both tiers).

Why Postgres: app fleets usually run one already, pgvector gives cosine search with an HNSW
index, and a ``WHERE partition = ...`` filter keeps every search inside one partition in
the database itself. One row per entry; ``last_used`` drives LRU trimming to
``max_entries`` (checked every ``trim_every`` writes, so writes stay one statement).

Failures (server down, timeout, broken connection) raise
:class:`~flowopt.errors.StoreError`; the connection is re-opened on the next call, so the
cache comes back by itself when the server does.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from typing import Any

import numpy as np

from flowopt.cache.stores.base import Candidate, Entry, StoreStats, Vector
from flowopt.errors import ConfigError, MissingDependencyError, StoreError

__all__ = ["PostgresStore"]

_COLUMNS = (
    "exact_key, partition, tenant, model_identity, question, body, tags, created_at, "
    "expires_at, embedding"
)


class PostgresStore:
    name = "postgres"
    semantic = True
    blocking = True

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "flowopt_cache",
        max_entries: int = 100_000,
        dim: int = 384,
        timeout_s: float = 2.0,
        trim_every: int = 100,
    ) -> None:
        try:
            import pgvector.psycopg  # noqa: F401
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(
                exc.name or "psycopg", "shared", "the Postgres cache store"
            ) from exc
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,50}", table):
            raise ConfigError(f"invalid table name {table!r}", hint="use [a-z_][a-z0-9_]*")
        self.dsn = dsn
        self.table = table
        self.max_entries = max_entries
        self.dim = dim
        self.timeout_s = timeout_s
        self.trim_every = trim_every
        self._conn: Any = None
        self._lock = threading.Lock()
        self._writes = 0
        self._ready = False
        # Down at start-up is not fatal: the table is created on the first call that
        # reaches the server; until then every call is a recorded miss.
        with self._lock, contextlib.suppress(StoreError):
            self._run("open", lambda conn: None)

    # -- connection ------------------------------------------------------------------------
    def _connect(self) -> Any:
        import psycopg
        from pgvector.psycopg import register_vector

        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        conn = psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=max(1, int(self.timeout_s + 0.5)),
            options=f"-c statement_timeout={int(self.timeout_s * 1000)}",
        )
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(conn)
            if not self._ready:
                self._create(conn)
                self._ready = True
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _run(self, what: str, fn: Any, *args: Any) -> Any:
        import psycopg

        try:
            return fn(self._connect(), *args)
        except (psycopg.Error, OSError) as exc:
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                self._conn = None
            raise StoreError(
                f"postgres cache store {what} failed: {exc}",
                hint="is the database up? the cache carries on without it",
            ) from exc

    def _create(self, conn: Any) -> None:
        t = self.table
        conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {t} (
                exact_key text PRIMARY KEY,
                partition text NOT NULL,
                tenant text NOT NULL,
                model_identity text NOT NULL,
                question text NOT NULL,
                body jsonb NOT NULL,
                tags text[] NOT NULL DEFAULT '{{}}',
                created_at double precision NOT NULL,
                expires_at double precision,
                last_used double precision NOT NULL,
                embedding vector({self.dim})
            )"""
        )
        conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_partition ON {t} (partition)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_tenant ON {t} (tenant)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_last_used ON {t} (last_used)")
        conn.execute(
            f"CREATE INDEX IF NOT EXISTS {t}_embedding ON {t} "
            "USING hnsw (embedding vector_cosine_ops)"
        )

    # -- the store protocol ------------------------------------------------------------------
    def get_exact(self, exact_key: str) -> Entry | None:
        def q(conn: Any) -> Entry | None:
            row = conn.execute(
                f"UPDATE {self.table} SET last_used = %s WHERE exact_key = %s "
                f"AND (expires_at IS NULL OR expires_at > %s) RETURNING {_COLUMNS}",
                (time.time(), exact_key, time.time()),
            ).fetchone()
            return None if row is None else _row(row)

        with self._lock:
            result: Entry | None = self._run("get", q)
            return result

    def search(self, partition: str, vector: Vector, k: int) -> list[Candidate]:
        vec = np.asarray(vector, dtype=np.float32)

        def q(conn: Any) -> list[Candidate]:
            rows = conn.execute(
                f"SELECT {_COLUMNS}, 1 - (embedding <=> %s) AS score FROM {self.table} "
                "WHERE partition = %s AND embedding IS NOT NULL "
                "AND (expires_at IS NULL OR expires_at > %s) "
                "ORDER BY embedding <=> %s LIMIT %s",
                (vec, partition, time.time(), vec, k),
            ).fetchall()
            return [Candidate(_row(r[:-1]), float(r[-1])) for r in rows]

        with self._lock:
            result: list[Candidate] = self._run("search", q)
            return result

    def touch(self, exact_key: str) -> None:
        with self._lock:
            self._run(
                "touch",
                lambda conn: conn.execute(
                    f"UPDATE {self.table} SET last_used = %s WHERE exact_key = %s",
                    (time.time(), exact_key),
                ),
            )

    def put(self, entry: Entry) -> None:
        body = json.dumps(
            {
                "text": entry.text,
                "chunks": None if entry.chunks is None else list(entry.chunks),
                "response": entry.response,
            }
        )
        emb = None if entry.embedding is None else np.asarray(entry.embedding, np.float32)

        def q(conn: Any) -> None:
            conn.execute(
                f"INSERT INTO {self.table} ({_COLUMNS}, last_used) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (exact_key) DO UPDATE SET partition = EXCLUDED.partition, "
                "tenant = EXCLUDED.tenant, model_identity = EXCLUDED.model_identity, "
                "question = EXCLUDED.question, body = EXCLUDED.body, tags = EXCLUDED.tags, "
                "created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, "
                "last_used = EXCLUDED.last_used, embedding = EXCLUDED.embedding",
                (
                    entry.exact_key,
                    entry.partition,
                    entry.tenant,
                    entry.model_identity,
                    entry.question,
                    body,
                    list(entry.tags),
                    entry.created_at,
                    entry.expires_at,
                    emb,
                    time.time(),
                ),
            )

        with self._lock:
            self._run("put", q)
            self._writes += 1
            if self._writes % self.trim_every == 0:
                self._run("trim", self._trim)

    def _trim(self, conn: Any) -> None:
        """Drop expired rows, then the least recently used beyond ``max_entries``."""
        t = self.table
        conn.execute(
            f"DELETE FROM {t} WHERE expires_at IS NOT NULL AND expires_at <= %s", (time.time(),)
        )
        conn.execute(
            f"DELETE FROM {t} WHERE exact_key IN (SELECT exact_key FROM {t} "
            f"ORDER BY last_used DESC OFFSET %s)",
            (self.max_entries,),
        )

    def invalidate(
        self,
        *,
        tenant: str | None = None,
        model_identity: str | None = None,
        tag: str | None = None,
    ) -> int:
        clauses, args = [], []
        if tenant is not None:
            clauses.append("tenant = %s")
            args.append(tenant)
        if model_identity is not None:
            clauses.append("model_identity = %s")
            args.append(model_identity)
        if tag is not None:
            clauses.append("%s = ANY(tags)")
            args.append(tag)
        if not clauses:
            return 0
        sql = f"DELETE FROM {self.table} WHERE " + " AND ".join(clauses)
        with self._lock:
            cur = self._run("invalidate", lambda conn: conn.execute(sql, args))
            return int(cur.rowcount)

    def clear(self) -> int:
        with self._lock:
            cur = self._run("clear", lambda conn: conn.execute(f"DELETE FROM {self.table}"))
            return int(cur.rowcount)

    def entries(self) -> list[Entry]:
        """Every live entry, oldest first: for exporters, not lookups."""

        def q(conn: Any) -> list[Entry]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM {self.table} "
                "WHERE expires_at IS NULL OR expires_at > %s ORDER BY created_at",
                (time.time(),),
            ).fetchall()
            return [_row(r) for r in rows]

        with self._lock:
            result: list[Entry] = self._run("list", q)
            return result

    def stats(self) -> StoreStats:
        def q(conn: Any) -> StoreStats:
            rows = conn.execute(
                f"SELECT tenant, count(*) FROM {self.table} GROUP BY tenant"
            ).fetchall()
            parts = conn.execute(f"SELECT count(DISTINCT partition) FROM {self.table}").fetchone()
            tenants = {r[0]: int(r[1]) for r in rows}
            return StoreStats(
                entries=sum(tenants.values()),
                partitions=int(parts[0]),
                tenants=tenants,
                detail={"table": self.table, "max_entries": self.max_entries},
            )

        with self._lock:
            result: StoreStats = self._run("stats", q)
            return result

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _row(r: Any) -> Entry:
    (exact_key, partition, tenant, model_identity, question, body, tags, created, expires, emb) = r
    if isinstance(body, str):
        body = json.loads(body)
    record = {
        **body,
        "exact_key": exact_key,
        "partition": partition,
        "tenant": tenant,
        "model_identity": model_identity,
        "question": question,
        "tags": tags,
        "created_at": created,
        "expires_at": expires,
    }
    return Entry.from_dict(record, embedding=None if emb is None else _array(emb))


def _array(value: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    """pgvector returns its own ``Vector`` type (or an array, depending on version)."""
    to_numpy = getattr(value, "to_numpy", None)
    raw = to_numpy() if to_numpy is not None else value
    return np.asarray(raw, dtype=np.float32)
