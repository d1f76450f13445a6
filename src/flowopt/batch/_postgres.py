"""The batch store on a shared Postgres: many workers on many machines, one job.

Why ``FOR UPDATE SKIP LOCKED``: each worker's claim locks the rows it picks and skips the
rows another worker's open claim holds, so N workers take N different slices of a job at
once instead of queueing on one lock (sqlite's ``BEGIN IMMEDIATE`` serialises claims, which
is fine on one machine). Everything else is :class:`~flowopt.batch.store.JobStore`'s SQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from flowopt.batch._base import ADDED_COLUMNS
from flowopt.batch._base import SCHEMA as _SCHEMA
from flowopt.batch.store import JobStore
from flowopt.errors import MissingDependencyError, StoreError

__all__ = ["PostgresJobStore"]

_SCHEMA_LOCK = 0x0F10_BA7C  # advisory lock id: one worker creates the tables at a time


class PostgresJobStore(JobStore):
    """Files, jobs and lines in Postgres (``gateway.batch.store: postgresql://...``)."""

    blob = "BYTEA"
    placeholder = "%s"
    lock_for_update = " FOR UPDATE"
    lock_for_share = " FOR SHARE"

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("psycopg", "shared", "the Postgres batch store") from exc
        super().__init__()
        self.dsn = dsn
        self._conn: Any = None
        self._create()

    def _connect(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        return self._conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        import psycopg

        with self._lock:
            try:
                conn = self._connect()
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except (psycopg.OperationalError, OSError) as exc:
                raise StoreError(
                    f"the Postgres batch store failed: {type(exc).__name__}",
                    hint="is the database up? workers resume where they stopped",
                ) from exc

    def _create(self) -> None:
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for stmt in _SCHEMA:
                cur.execute(stmt.format(blob=self.blob))
            self._add_missing_columns(cur)

    def _add_missing_columns(self, cur: Any) -> None:
        # Looked up first: ALTER TABLE takes an exclusive lock on the table even when the
        # column is there, and every gateway worker and batch runner opens the store.
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = 'flowopt_batch_jobs'"
        )
        have = {r[0] for r in cur.fetchall()}
        for name, kind in ADDED_COLUMNS:
            if name not in have:
                cur.execute(
                    f"ALTER TABLE flowopt_batch_jobs ADD COLUMN IF NOT EXISTS {name} {kind}"
                )

    def _claim_rows(self, cur: Any, job_id: str, limit: int) -> list[tuple[Any, ...]]:
        cur.execute(
            "SELECT number, custom_id, body, attempts FROM flowopt_batch_lines "
            "WHERE job_id = %s AND state = 'pending' ORDER BY number LIMIT %s "
            "FOR UPDATE SKIP LOCKED",
            (job_id, limit),
        )
        return list(cur.fetchall())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
