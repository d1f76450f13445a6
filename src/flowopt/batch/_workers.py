"""Workers and their lines: register, heartbeat, claim, commit, and reaping the dead.

Why leases and a process check: a worker killed with SIGKILL cannot say goodbye, so its
claimed lines carry its id until someone notices. A worker elsewhere is presumed dead
after ``lease_s`` without a heartbeat; one on this host is known dead as soon as its
process is gone, so a restarted worker picks its lines up at once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from flowopt.batch._base import StoreBase

__all__ = ["Claimed", "WorkerRows"]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A line a worker now owns: run it, then :meth:`JobStore.complete` it."""

    job_id: str
    number: int
    custom_id: str
    body: str
    attempts: int
    endpoint: str
    tenant: str | None


def _past(expires_at: int | None) -> bool:
    return expires_at is not None and time.time() > expires_at


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerRows(StoreBase):
    """The line-claiming half of a job store."""

    # -- workers and lines ------------------------------------------------------------------
    def register(self, worker_id: str) -> None:
        with self._tx() as cur:
            self._exec(cur, "DELETE FROM flowopt_batch_workers WHERE id = ?", (worker_id,))
            self._exec(
                cur,
                "INSERT INTO flowopt_batch_workers (id, host, pid, heartbeat) VALUES (?, ?, ?, ?)",
                (worker_id, self.host, os.getpid(), time.time()),
            )

    def heartbeat(self, worker_id: str) -> None:
        with self._tx() as cur:
            self._exec(
                cur,
                "UPDATE flowopt_batch_workers SET heartbeat = ? WHERE id = ?",
                (time.time(), worker_id),
            )

    def unregister(self, worker_id: str) -> None:
        """A clean stop: this worker's running lines go back to pending at once."""
        with self._tx() as cur:
            self._exec(
                cur,
                "UPDATE flowopt_batch_lines SET state = 'pending', worker = NULL "
                "WHERE state = 'running' AND worker = ?",
                (worker_id,),
            )
            self._exec(cur, "DELETE FROM flowopt_batch_workers WHERE id = ?", (worker_id,))

    def reap(self, lease_s: float) -> int:
        """Give the running lines of dead workers back; how many. Dead: no heartbeat for
        ``lease_s``, or on this host with its process gone."""
        with self._tx() as cur:
            rows = self._exec(
                cur, "SELECT id, host, pid, heartbeat FROM flowopt_batch_workers"
            ).fetchall()
            cutoff = time.time() - lease_s
            dead = [
                str(wid)
                for wid, host, pid, beat in rows
                if beat < cutoff or (host == self.host and not _pid_alive(int(pid)))
            ]
            freed: int = 0
            for wid in dead:
                freed += self._exec(
                    cur,
                    "UPDATE flowopt_batch_lines SET state = 'pending', worker = NULL "
                    "WHERE state = 'running' AND worker = ?",
                    (wid,),
                ).rowcount
                self._exec(cur, "DELETE FROM flowopt_batch_workers WHERE id = ?", (wid,))
            # lines claimed by a worker that never registered (or was deleted) are orphans
            freed += self._exec(
                cur,
                "UPDATE flowopt_batch_lines SET state = 'pending', worker = NULL "
                "WHERE state = 'running' AND worker NOT IN (SELECT id FROM flowopt_batch_workers)",
            ).rowcount
        return int(freed)

    def _claimable(self, cur: Any, job_id: str) -> Any:
        """The job's (status, endpoint, tenant, expires_at) row while lines may be claimed
        from it; None when it is gone, not running, or past its window."""
        job = self._exec(
            cur,
            "SELECT status, endpoint, tenant, expires_at FROM flowopt_batch_jobs WHERE id = ?"
            + self.lock_for_share,  # finish() waits for this claim (Postgres)
            (job_id,),
        ).fetchone()
        if job is None or job[0] != "in_progress" or _past(job[3]):
            return None
        return job

    def claim(self, job_id: str, worker_id: str, limit: int) -> list[Claimed]:
        """Up to ``limit`` pending lines of a running job, now owned by ``worker_id``."""
        with self._tx() as cur:
            job = self._claimable(cur, job_id)
            if job is None:
                return []  # closed, cancelling, or expired: finish() closes it
            rows = self._claim_rows(cur, job_id, limit)
            for number, *_ in rows:
                self._exec(
                    cur,
                    "UPDATE flowopt_batch_lines SET state = 'running', worker = ?, "
                    "attempts = attempts + 1 WHERE job_id = ? AND number = ?",
                    (worker_id, job_id, number),
                )
        return [
            Claimed(job_id, int(n), str(c), str(b), int(a) + 1, job[1], job[2])
            for n, c, b, a in rows
        ]

    def claim_numbers(self, job_id: str, worker_id: str, numbers: list[int]) -> list[Claimed]:
        """The lines ``numbers`` that are still pending, now owned by ``worker_id`` (an
        engine that hands out line numbers itself: Ray Data)."""
        out: list[Claimed] = []
        with self._tx() as cur:
            job = self._claimable(cur, job_id)
            if job is None:
                return []  # closed, cancelling, or expired: finish() closes it
            for number in numbers:
                taken = self._exec(
                    cur,
                    "UPDATE flowopt_batch_lines SET state = 'running', worker = ?, "
                    "attempts = attempts + 1 WHERE job_id = ? AND number = ? "
                    "AND state = 'pending'",
                    (worker_id, job_id, number),
                ).rowcount
                if not taken:
                    continue
                cid, body, attempts = self._exec(
                    cur,
                    "SELECT custom_id, body, attempts FROM flowopt_batch_lines "
                    "WHERE job_id = ? AND number = ?",
                    (job_id, number),
                ).fetchone()
                out.append(
                    Claimed(job_id, number, str(cid), str(body), int(attempts), job[1], job[2])
                )
        return out

    def pending_numbers(self, job_id: str) -> list[int]:
        """Numbers of the lines nobody has claimed (or that came back from the dead)."""
        with self._tx() as cur:
            rows = self._exec(
                cur,
                "SELECT number FROM flowopt_batch_lines WHERE job_id = ? AND state = 'pending' "
                "ORDER BY number",
                (job_id,),
            ).fetchall()
        return [int(r[0]) for r in rows]

    def complete(self, line: Claimed, worker_id: str, *, ok: bool, record: str) -> bool:
        """Commit a line's output (``ok``) or error record; False when the line is no
        longer this worker's (it was presumed dead and the line given to another)."""
        with self._tx() as cur:
            n = self._exec(
                cur,
                "UPDATE flowopt_batch_lines SET state = ?, record = ?, worker = NULL, body = NULL "
                "WHERE job_id = ? AND number = ? AND state = 'running' AND worker = ?",
                ("done" if ok else "failed", record, line.job_id, line.number, worker_id),
            ).rowcount
        return bool(n == 1)
