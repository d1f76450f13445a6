"""The durable state of batch jobs: files, jobs, one row per line, and the workers.

Why one row per line, committed one at a time: that row is the whole truth about a line
(pending, running under a worker, done with its output record, failed with its reason). A
worker that dies loses nothing committed; a restarted one re-runs only the lines that have
no result. The output file is written from those rows when the last line lands, in input
order, so each ``custom_id`` appears in it exactly once by construction — even when a line
was run twice (its first worker presumed dead, then coming back): completing a line is an
``UPDATE ... WHERE state = 'running' AND worker = <me>``, so only the current owner's
answer is kept.

Claims are atomic across processes: sqlite takes its write lock first (``BEGIN
IMMEDIATE``); Postgres (:mod:`flowopt.batch._postgres`) selects with ``FOR UPDATE SKIP
LOCKED`` so many workers claim different lines without waiting on each other. A worker
heartbeats; its running lines go back to pending when its heartbeat is older than the
lease, or at once when it ran on this host and its process is gone.

The methods are blocking (a database round trip); async callers run them in a thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from flowopt._batch_spec import DEFAULT_STORE
from flowopt.batch._base import now as _now
from flowopt.batch._lines import ENDPOINTS, BadLine, error_record, parse_lines
from flowopt.batch._workers import Claimed, WorkerRows
from flowopt.errors import ConfigError, InvalidRequestError

__all__ = ["Claimed", "JobStore", "SqliteJobStore", "open_store"]

_OPEN = ("in_progress", "cancelling")  # job states with work left
_JOB_COLS = (
    "id, tenant, endpoint, input_file_id, completion_window, status, created_at, expires_at, "
    "times, output_file_id, error_file_id, metadata, errors, usage_totals"
)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _field(obj: Any, key: str) -> Any:
    # An engine's usage details may be null or, from an odd backend, not an object.
    return obj.get(key) if isinstance(obj, dict) else None


def _window_seconds(window: str) -> int:
    if not (window.endswith("h") and window[:-1].isdigit() and int(window[:-1]) >= 1):
        raise InvalidRequestError(
            f"completion_window must be hours like '24h', got {window[:20]!r}",
            param="completion_window",
        )
    return int(window[:-1]) * 3600


class JobStore(WorkerRows):
    """Files, jobs and lines; subclasses give the connection (sqlite, Postgres)."""

    # -- jobs -------------------------------------------------------------------------------
    def create_job(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
        tenant: str | None = None,
        job_id: str | None = None,
    ) -> dict[str, Any]:
        """Check and split the input file into lines, all in one transaction; the batch
        object. Malformed lines are kept as failed lines (the error file names them)."""
        if endpoint not in ENDPOINTS:
            raise InvalidRequestError(
                f"endpoint must be one of {sorted(ENDPOINTS)}, got {endpoint[:60]!r}",
                param="endpoint",
            )
        window = _window_seconds(completion_window)
        data = self.file_content(input_file_id, tenant)
        if data is None:
            raise InvalidRequestError(
                f"no file {input_file_id[:60]!r}: upload it first (POST /v1/files, "
                "purpose 'batch')",
                param="input_file_id",
            )
        jid = job_id or "batch_" + uuid.uuid4().hex
        created = _now()
        good, bad = 0, []
        with self._tx() as cur:
            for line in parse_lines(data, endpoint):
                if isinstance(line, BadLine):
                    bad.append(line)
                    rec = error_record(line.custom_id, "invalid_line", line.message, line.number)
                    state, body = "invalid", None
                else:
                    good += 1
                    rec, state, body = None, "pending", line.body
                self._exec(
                    cur,
                    "INSERT INTO flowopt_batch_lines (job_id, number, custom_id, body, state,"
                    " record) VALUES (?, ?, ?, ?, ?, ?)",
                    (jid, line.number, line.custom_id, body, state, rec),
                )
            status, times, errors = "in_progress", {"in_progress_at": created}, None
            if not good:
                status, times = "failed", {"failed_at": created}
                # no error file for a batch that never ran: its errors are on the batch
                self._exec(
                    cur, "UPDATE flowopt_batch_lines SET record = NULL WHERE job_id = ?", (jid,)
                )
                first = bad[:1000]
                errors = {
                    "object": "list",
                    "data": [
                        {"code": "invalid_line", "message": b.message, "line": b.number}
                        for b in first
                    ]
                    or [{"code": "empty_file", "message": "the input file has no lines"}],
                }
            self._exec(
                cur,
                f"INSERT INTO flowopt_batch_jobs ({_JOB_COLS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?, NULL)",
                (
                    jid,
                    tenant,
                    endpoint,
                    input_file_id,
                    completion_window,
                    status,
                    created,
                    created + window,
                    json.dumps(times),
                    json.dumps(metadata) if metadata else None,
                    json.dumps(errors) if errors else None,
                ),
            )
        job = self.job(jid, tenant)
        assert job is not None
        return job

    def _counts(self, cur: Any, job_id: str) -> dict[str, int]:
        rows = self._exec(
            cur,
            "SELECT state, COUNT(*) FROM flowopt_batch_lines WHERE job_id = ? GROUP BY state",
            (job_id,),
        ).fetchall()
        return {str(s): int(n) for s, n in rows}

    def counts(self, job_id: str) -> dict[str, int]:
        """Lines by state (``pending``, ``running``, ``done``, ``failed``, ``invalid``,
        ``cancelled``, ``expired``): what is committed now."""
        with self._tx() as cur:
            return self._counts(cur, job_id)

    def _job_object(self, row: Sequence[Any], counts: dict[str, int]) -> dict[str, Any]:
        times = json.loads(row[8])
        failed = sum(counts.get(s, 0) for s in ("failed", "invalid", "cancelled", "expired"))
        out: dict[str, Any] = {
            "id": row[0],
            "object": "batch",
            "endpoint": row[2],
            "errors": json.loads(row[12]) if row[12] else None,
            "input_file_id": row[3],
            "completion_window": row[4],
            "status": row[5],
            "output_file_id": row[9],
            "error_file_id": row[10],
            "created_at": row[6],
            "expires_at": row[7],
            "request_counts": {
                "total": sum(counts.values()),
                "completed": counts.get("done", 0),
                "failed": failed,
            },
            "metadata": json.loads(row[11]) if row[11] else None,
            # token totals of the answered lines, once the batch is closed
            "usage": json.loads(row[13]) if row[13] else None,
        }
        for key in (
            "in_progress_at",
            "finalizing_at",
            "completed_at",
            "failed_at",
            "expired_at",
            "cancelling_at",
            "cancelled_at",
        ):
            out[key] = times.get(key)
        return out

    def job(
        self, job_id: str, tenant: str | None = None, *, any_tenant: bool = False
    ) -> dict[str, Any] | None:
        """The batch object (OpenAI's shape), or None."""
        with self._tx() as cur:
            sql = f"SELECT {_JOB_COLS} FROM flowopt_batch_jobs WHERE id = ?"
            params: tuple[Any, ...] = (job_id,)
            if not any_tenant:
                sql += " AND tenant IS NOT DISTINCT FROM ?"
                params += (tenant,)
            row = self._exec(cur, sql, params).fetchone()
            if row is None:
                return None
            return self._job_object(row, self._counts(cur, job_id))

    def jobs(
        self, tenant: str | None, *, after: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """This tenant's batches, newest first, after the cursor ``after``."""
        with self._tx() as cur:
            sql = f"SELECT {_JOB_COLS} FROM flowopt_batch_jobs WHERE tenant IS NOT DISTINCT FROM ?"
            params: tuple[Any, ...] = (tenant,)
            if after:
                sql += (
                    " AND (created_at, id) < (SELECT created_at, id FROM flowopt_batch_jobs "
                    "WHERE id = ? AND tenant IS NOT DISTINCT FROM ?)"
                )
                params += (after, tenant)
                self._check_cursor(cur, "flowopt_batch_jobs", "batch", after, tenant)
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            rows = self._exec(cur, sql, (*params, limit)).fetchall()
            return [self._job_object(r, self._counts(cur, r[0])) for r in rows]

    def closed_jobs(self, since: float = 0) -> list[dict[str, Any]]:
        """Every tenant's closed jobs created at or after ``since``, oldest first: the batch
        object with ``tenant`` added (for exporters such as ``flowopt distill``)."""
        with self._tx() as cur:
            rows = self._exec(
                cur,
                f"SELECT {_JOB_COLS} FROM flowopt_batch_jobs WHERE status IN ('completed', "
                "'cancelled', 'expired') AND created_at >= ? ORDER BY created_at, id",
                (int(since),),
            ).fetchall()
            return [{**self._job_object(r, self._counts(cur, r[0])), "tenant": r[1]} for r in rows]

    def open_jobs(self) -> list[str]:
        """Jobs with work left (any tenant), oldest first."""
        with self._tx() as cur:
            rows = self._exec(
                cur,
                "SELECT id FROM flowopt_batch_jobs WHERE status IN ('in_progress', "
                "'cancelling') ORDER BY created_at, id",
            ).fetchall()
        return [str(r[0]) for r in rows]

    def _set_status(self, cur: Any, job_id: str, status: str, **extra: Any) -> None:
        row = self._exec(
            cur, "SELECT times FROM flowopt_batch_jobs WHERE id = ?", (job_id,)
        ).fetchone()
        times = json.loads(row[0])
        times[f"{status}_at"] = _now()
        sets, params = ["status = ?", "times = ?"], [status, json.dumps(times)]
        for key, value in extra.items():
            sets.append(f"{key} = ?")
            params.append(value)
        self._exec(
            cur,
            f"UPDATE flowopt_batch_jobs SET {', '.join(sets)} WHERE id = ?",
            (*params, job_id),
        )

    def cancel(self, job_id: str, tenant: str | None) -> dict[str, Any] | None:
        """Stop taking this job's lines; running ones finish, then the job is cancelled."""
        with self._tx() as cur:
            row = self._exec(
                cur,
                "SELECT status FROM flowopt_batch_jobs WHERE id = ? "
                "AND tenant IS NOT DISTINCT FROM ?",
                (job_id, tenant),
            ).fetchone()
            if row is None:
                return None
            if row[0] == "in_progress":
                self._set_status(cur, job_id, "cancelling")
        self.finish(job_id)
        return self.job(job_id, tenant)

    def finish(self, job_id: str) -> bool:
        """Write the output and error files and close the job, once, when no line is left
        to run (for a cancelled or expired job: none running). True when it closed now."""
        with self._tx() as cur:
            # Locked (Postgres), so a claim that read the job as open commits before this
            # counts its lines: none becomes `running` after the count.
            row = self._exec(
                cur,
                "SELECT status, expires_at, tenant FROM flowopt_batch_jobs WHERE id = ?"
                + self.lock_for_update,
                (job_id,),
            ).fetchone()
            if row is None or row[0] not in _OPEN:
                return False
            status, expires_at, tenant = row
            counts = self._counts(cur, job_id)
            expired = status == "in_progress" and expires_at is not None and _now() > expires_at
            if counts.get("running", 0) or (
                status == "in_progress" and counts.get("pending", 0) and not expired
            ):
                return False
            final = (
                "expired" if expired else ("cancelled" if status == "cancelling" else "completed")
            )
            if counts.get("pending", 0):
                self._drop_pending(cur, job_id, "batch_expired" if expired else "batch_cancelled")
            out_id = self._write_file(cur, job_id, tenant, "done", "output")
            err_id = self._write_file(cur, job_id, tenant, "error", "errors")
            usage = self._usage(cur, job_id)
            # The files now hold every record: the per-line copies go, so that deleting
            # the files (DELETE /v1/files/...) deletes the batch's answers.
            self._exec(
                cur, "UPDATE flowopt_batch_lines SET record = NULL WHERE job_id = ?", (job_id,)
            )
            self._set_status(cur, job_id, "finalizing")
            self._set_status(
                cur,
                job_id,
                final,
                output_file_id=out_id,
                error_file_id=err_id,
                usage_totals=json.dumps(usage),
            )
        return True

    def _usage(self, cur: Any, job_id: str) -> dict[str, Any]:
        """OpenAI's batch ``usage``: the answered lines' token counts added up (an
        embeddings line has input tokens only)."""
        rows = self._exec(
            cur,
            "SELECT record FROM flowopt_batch_lines WHERE job_id = ? AND state = 'done'",
            (job_id,),
        ).fetchall()
        inp = out = cached = reasoning = 0
        for (record,) in rows:
            try:
                rec = json.loads(record)
            except (TypeError, ValueError):
                continue  # never a reason for a batch not to close
            used = _field(_field(_field(rec, "response"), "body"), "usage")
            if not isinstance(used, dict):
                continue
            inp += _int(used.get("prompt_tokens"))
            out += _int(used.get("completion_tokens"))
            cached += _int(_field(used.get("prompt_tokens_details"), "cached_tokens"))
            reasoning += _int(_field(used.get("completion_tokens_details"), "reasoning_tokens"))
        return {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inp + out,
        }

    def _drop_pending(self, cur: Any, job_id: str, code: str) -> None:
        rows = self._exec(
            cur,
            "SELECT number, custom_id FROM flowopt_batch_lines WHERE job_id = ? "
            "AND state = 'pending'",
            (job_id,),
        ).fetchall()
        why = "the batch expired" if code == "batch_expired" else "the batch was cancelled"
        state = "expired" if code == "batch_expired" else "cancelled"
        for number, cid in rows:
            self._exec(
                cur,
                "UPDATE flowopt_batch_lines SET state = ?, record = ?, body = NULL "
                "WHERE job_id = ? AND number = ?",
                (
                    state,
                    error_record(cid, code, f"{why} before this line ran", number),
                    job_id,
                    number,
                ),
            )

    def _write_file(
        self, cur: Any, job_id: str, tenant: str | None, which: str, suffix: str
    ) -> str | None:
        states = "('done')" if which == "done" else "('failed', 'invalid', 'cancelled', 'expired')"
        rows = self._exec(
            cur,
            f"SELECT record FROM flowopt_batch_lines WHERE job_id = ? AND state IN {states} "
            "ORDER BY number",
            (job_id,),
        ).fetchall()
        if not rows:
            return None
        data = "".join(str(r[0]) + "\n" for r in rows).encode("utf-8")
        fid = "file-" + uuid.uuid4().hex
        self._insert_file(cur, fid, data, f"{job_id}_{suffix}.jsonl", "batch_output", tenant)
        return fid


class SqliteJobStore(JobStore):
    """One sqlite file: any number of workers on one machine (claims take its write lock)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(os.path.expanduser(str(path)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._create()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_store(where: str | Path | None = None) -> JobStore:
    """The store at ``where``: a ``postgresql://`` URL, else a sqlite file path
    (``sqlite:///path`` too); None is ``~/.cache/flowopt/batch.sqlite``."""
    target = str(where) if where is not None else DEFAULT_STORE
    if target.startswith(("postgresql://", "postgres://")):
        from flowopt.batch._postgres import PostgresJobStore

        return PostgresJobStore(target)
    if "://" in target and not target.startswith("sqlite:///"):
        raise ConfigError(
            f"unknown batch store {target.split('://')[0]!r}://",
            hint="a sqlite file path or a postgresql:// URL",
        )
    return SqliteJobStore(target.removeprefix("sqlite:///") if "://" in target else target)
