"""The SQL every batch store shares, and files: the dialect is a subclass's business.

Why one body of SQL for sqlite and Postgres: the statements are plain (placeholders are
rewritten, ``IS NOT DISTINCT FROM`` and row comparisons exist in both), so only the
connection, the transaction and the claim differ (:class:`~flowopt.batch.store.SqliteJobStore`,
:class:`~flowopt.batch._postgres.PostgresJobStore`).
"""

from __future__ import annotations

import abc
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from flowopt.errors import InvalidRequestError

__all__ = ["ADDED_COLUMNS", "SCHEMA", "StoreBase", "gone_cursor", "now"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS flowopt_batch_files (
        id TEXT PRIMARY KEY, tenant TEXT, filename TEXT NOT NULL, purpose TEXT NOT NULL,
        bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, data {blob} NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS flowopt_batch_jobs (
        id TEXT PRIMARY KEY, tenant TEXT, endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL,
        completion_window TEXT NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL,
        expires_at INTEGER, times TEXT NOT NULL, output_file_id TEXT, error_file_id TEXT,
        metadata TEXT, errors TEXT, usage_totals TEXT)""",
    """CREATE TABLE IF NOT EXISTS flowopt_batch_lines (
        job_id TEXT NOT NULL, number INTEGER NOT NULL, custom_id TEXT, body TEXT,
        state TEXT NOT NULL, worker TEXT, attempts INTEGER NOT NULL DEFAULT 0, record TEXT,
        PRIMARY KEY (job_id, number))""",
    """CREATE INDEX IF NOT EXISTS flowopt_batch_lines_state
        ON flowopt_batch_lines (job_id, state)""",
    """CREATE TABLE IF NOT EXISTS flowopt_batch_workers (
        id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,
        heartbeat DOUBLE PRECISION NOT NULL)""",
)


_FILE_COLS = "id, filename, purpose, bytes, created_at"


def _file_object(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "object": "file",
        "bytes": row[3],
        "created_at": row[4],
        "filename": row[1],
        "purpose": row[2],
        "status": "processed",
    }


# (column, type) of flowopt_batch_jobs added since its first version; stores made before
# get them at open.
ADDED_COLUMNS = (("usage_totals", "TEXT"),)


def now() -> int:
    return int(time.time())


def gone_cursor(what: str, after: str) -> InvalidRequestError:
    """A list's ``after`` that names nothing (deleted, or never this tenant's): an error,
    not an empty page that would read as the end of the list."""
    return InvalidRequestError(
        f"after: no {what} {after[:60]!r} to continue from (deleted since the last page?)",
        param="after",
        hint="list again from the start; to delete many, list them all first, then delete",
    )


class StoreBase(abc.ABC):
    """Dialect-neutral logic; subclasses give a connection, a transaction and a claim."""

    blob = "BLOB"
    placeholder = "?"
    # Row locks on the job row (Postgres); sqlite's BEGIN IMMEDIATE already serialises.
    lock_for_update = ""
    lock_for_share = ""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.host = socket.gethostname()

    # -- the dialect ------------------------------------------------------------------------
    @abc.abstractmethod
    def _tx(self) -> contextlib.AbstractContextManager[Any]:
        """One transaction, yielding a cursor: committed on exit, rolled back on error."""

    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._q(sql), tuple(params))
        return cur

    def _claim_rows(self, cur: Any, job_id: str, limit: int) -> list[tuple[Any, ...]]:
        rows = self._exec(
            cur,
            "SELECT number, custom_id, body, attempts FROM flowopt_batch_lines "
            "WHERE job_id = ? AND state = 'pending' ORDER BY number LIMIT ?",
            (job_id, limit),
        ).fetchall()
        return list(rows)

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection."""

    # -- schema -----------------------------------------------------------------------------
    def _create(self) -> None:
        with self._tx() as cur:
            for stmt in SCHEMA:
                self._exec(cur, stmt.format(blob=self.blob))
            self._add_missing_columns(cur)

    def _add_missing_columns(self, cur: Any) -> None:
        """Columns added after a store was first made (sqlite has no ``ADD COLUMN IF NOT
        EXISTS``; Postgres overrides this with it)."""
        have = {r[1] for r in self._exec(cur, "PRAGMA table_info(flowopt_batch_jobs)").fetchall()}
        for name, kind in ADDED_COLUMNS:
            if name not in have:
                self._exec(cur, f"ALTER TABLE flowopt_batch_jobs ADD COLUMN {name} {kind}")

    # -- files ------------------------------------------------------------------------------
    def put_file(
        self, data: bytes, *, filename: str, purpose: str, tenant: str | None
    ) -> dict[str, Any]:
        """Store a file; its OpenAI file object."""
        fid = "file-" + uuid.uuid4().hex
        with self._tx() as cur:
            self._insert_file(cur, fid, data, filename, purpose, tenant)
        return self.file_info(fid, tenant) or {}

    def _insert_file(
        self, cur: Any, fid: str, data: bytes, filename: str, purpose: str, tenant: str | None
    ) -> None:
        self._exec(
            cur,
            "INSERT INTO flowopt_batch_files (id, tenant, filename, purpose, bytes, created_at,"
            " data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (fid, tenant, filename, purpose, len(data), now(), data),
        )

    def file_info(self, fid: str, tenant: str | None) -> dict[str, Any] | None:
        """The file object, or None when there is no such file for this tenant."""
        with self._tx() as cur:
            row = self._exec(
                cur,
                f"SELECT {_FILE_COLS} FROM flowopt_batch_files "
                "WHERE id = ? AND tenant IS NOT DISTINCT FROM ?",
                (fid, tenant),
            ).fetchone()
        return None if row is None else _file_object(row)

    def files(
        self,
        tenant: str | None,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 10_000,
        ascending: bool = False,
    ) -> list[dict[str, Any]]:
        """This tenant's file objects by ``created_at`` (newest first unless
        ``ascending``), after the cursor ``after`` (a file id), at most ``limit``."""
        sql = f"SELECT {_FILE_COLS} FROM flowopt_batch_files WHERE tenant IS NOT DISTINCT FROM ?"
        params: tuple[Any, ...] = (tenant,)
        if purpose is not None:
            sql += " AND purpose = ?"
            params += (purpose,)
        cmp, order = (">", "ASC") if ascending else ("<", "DESC")
        if after:
            sql += (
                f" AND (created_at, id) {cmp} (SELECT created_at, id FROM flowopt_batch_files"
                " WHERE id = ? AND tenant IS NOT DISTINCT FROM ?)"
            )
            params += (after, tenant)
        sql += f" ORDER BY created_at {order}, id {order} LIMIT ?"
        with self._tx() as cur:
            if after:
                self._check_cursor(cur, "flowopt_batch_files", "file", after, tenant)
            rows = self._exec(cur, sql, (*params, limit)).fetchall()
        return [_file_object(r) for r in rows]

    def _check_cursor(
        self, cur: Any, table: str, what: str, after: str, tenant: str | None
    ) -> None:
        """Raise :func:`gone_cursor` unless ``after`` is a row of ``tenant``'s in ``table``."""
        if not self._exec(
            cur,
            f"SELECT 1 FROM {table} WHERE id = ? AND tenant IS NOT DISTINCT FROM ?",
            (after, tenant),
        ).fetchone():
            raise gone_cursor(what, after)

    def delete_file(self, fid: str, tenant: str | None) -> bool:
        """Delete this tenant's file and its bytes; False when there was none. A batch
        that names it keeps running (its lines were copied in when it was created) and
        keeps its ``*_file_id``, whose content is then a 404, as OpenAI's is."""
        with self._tx() as cur:
            gone = self._exec(
                cur,
                "DELETE FROM flowopt_batch_files WHERE id = ? AND tenant IS NOT DISTINCT FROM ?",
                (fid, tenant),
            ).rowcount
        return bool(gone)

    def file_content(self, fid: str, tenant: str | None) -> bytes | None:
        with self._tx() as cur:
            row = self._exec(
                cur,
                "SELECT data FROM flowopt_batch_files WHERE id = ? "
                "AND tenant IS NOT DISTINCT FROM ?",
                (fid, tenant),
            ).fetchone()
        return None if row is None else bytes(row[0])
