"""The extraction queue: bounded, persisted, debounced, off the request path.

Why each property:

- **Off the request path.** The middleware only appends a row (one sqlite insert, well
  under a millisecond) after the answer is complete; a worker thread does the LLM call and
  the writes. The answer never waits for extraction.
- **Persisted.** A turn is acknowledged once its row is committed; a restart finds the row
  and extracts it then, so nothing acknowledged is lost.
- **Debounced per conversation.** A conversation is taken only once it has been quiet for
  ``debounce_s``; then all its pending turns go to one extraction call.
- **Bounded, first to be shed.** Beyond ``max_pending`` rows a new turn is refused
  (counted in ``shed``) instead of growing without limit; :meth:`pause` stops the worker
  under load, and the requests go on.
- **Lag is visible.** :meth:`stats` reports pending rows, the age of the oldest one, and
  counts of processed, shed and failed jobs.

The worker waits on a condition variable (woken by new rows, resume, drain and close),
with a timeout only for the debounce deadline.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ExtractionJob", "ExtractionQueue", "QueueStats"]

_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conv TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
)
"""


@dataclass(frozen=True)
class ExtractionJob:
    """All pending rows of one conversation, handed to the processor at once."""

    conv: str
    payloads: list[dict[str, Any]]


@dataclass(frozen=True)
class QueueStats:
    pending: int
    oldest_age_s: float
    processed: int
    shed: int
    failed: int


Processor = Callable[[ExtractionJob], None]


class ExtractionQueue:
    """See the module docstring. ``process`` runs in the worker thread; an exception
    leaves the rows for a retry, up to ``max_attempts``, then they are dropped (counted)."""

    def __init__(
        self,
        path: str | Path,
        process: Processor,
        *,
        debounce_s: float = 2.0,
        max_pending: int = 1000,
        max_attempts: int = 3,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._process = process
        self.debounce_s = debounce_s
        self.max_pending = max_pending
        self.max_attempts = max_attempts
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()
        self._cond = threading.Condition()
        self._paused = False
        self._closed = False
        self._draining = 0
        self._busy = False
        self._processed = self._shed = self._failed = 0
        self._thread: threading.Thread | None = None

    # -- producer side ----------------------------------------------------------------
    def put(self, conv: str, payload: dict[str, Any]) -> bool:
        """Persist one turn for ``conv``; False when the queue is full (shed)."""
        with self._cond:
            (n,) = self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()
            if n >= self.max_pending:
                self._shed += 1
                return False
            self._db.execute(
                "INSERT INTO jobs (conv, payload, created) VALUES (?, ?, ?)",
                (conv, json.dumps(payload), time.time()),
            )
            self._db.commit()
            self._cond.notify_all()
        return True

    # -- control ----------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="flowopt-memory-extract", daemon=True
                )
                self._thread.start()

    def pause(self) -> None:
        """Stop taking jobs (rows keep accumulating, up to ``max_pending``)."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Process everything pending now, ignoring the debounce; True when empty."""
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._draining += 1
            self._cond.notify_all()
            try:
                while self._count() > 0 or self._busy:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._draining -= 1

    def stats(self) -> QueueStats:
        with self._cond:
            n, oldest = self._db.execute("SELECT COUNT(*), MIN(created) FROM jobs").fetchone()
            age = 0.0 if oldest is None else max(0.0, time.time() - oldest)
            return QueueStats(int(n), age, self._processed, self._shed, self._failed)

    def close(self) -> None:
        """Stop the worker (after the job in progress); pending rows stay on disk."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._cond:
            self._db.close()

    # -- worker -----------------------------------------------------------------------
    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    def _next(self) -> tuple[str | None, float | None]:
        """The conversation ready to extract, or how long until one is."""
        rows = self._db.execute(
            "SELECT conv, MAX(created) FROM jobs GROUP BY conv ORDER BY MIN(created)"
        ).fetchall()
        if not rows:
            return None, None
        now = time.time()
        wait: float | None = None
        for conv, last in rows:
            quiet = now - last
            if self._draining or quiet >= self.debounce_s:
                return str(conv), None
            left = self.debounce_s - quiet
            wait = left if wait is None else min(wait, left)
        return None, wait

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    conv, wait = (None, None) if self._paused else self._next()
                    if conv is not None:
                        break
                    self._cond.wait(wait)
                rows = self._db.execute(
                    "SELECT id, payload FROM jobs WHERE conv = ? ORDER BY id", (conv,)
                ).fetchall()
                self._busy = True
            ids = [r[0] for r in rows]
            job = ExtractionJob(conv, [json.loads(r[1]) for r in rows])
            ok = True
            try:
                self._process(job)
            except Exception as exc:  # a failed extraction must never kill the worker
                ok = False
                _log.warning("memory extraction failed for a conversation: %s", type(exc).__name__)
            with self._cond:
                marks = ",".join("?" * len(ids))
                if ok:
                    self._db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", ids)
                    self._processed += 1
                else:
                    self._db.execute(
                        f"UPDATE jobs SET attempts = attempts + 1 WHERE id IN ({marks})", ids
                    )
                    dropped = self._db.execute(
                        f"DELETE FROM jobs WHERE id IN ({marks}) AND attempts >= ?",
                        (*ids, self.max_attempts),
                    ).rowcount
                    if dropped:
                        self._failed += 1
                self._db.commit()
                self._busy = False
                self._cond.notify_all()
