"""The batch worker: claims a job's lines, runs them concurrently, commits each answer.

Why ``concurrency`` lanes that each claim one line at a time: vLLM's continuous batching
is full when enough requests are in flight, and one line per claim means a worker killed
mid-job holds at most ``concurrency`` lines, which go back to the others (its process gone
on this host: at once; elsewhere: after ``lease_s`` without a heartbeat). Each answer is
committed on its own (:meth:`JobStore.complete`), so a restart re-runs only the lines
without one. The output file is written by whichever worker commits the last line.

A line that fails transiently (5xx, timeout, 429) is tried up to ``max_attempts`` times,
waiting what the error's ``Retry-After`` says; a line the shedder refused (interactive
traffic came first) waits and tries again without using up an attempt. Any other failure
(a 4xx: bad parameters, unknown model) goes to the error file at once, with its status
and the error body the route would have answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from flowopt._batch_spec import BatchSettings
from flowopt.batch._execute import Outcome
from flowopt.batch._lines import output_record
from flowopt.batch.store import Claimed, JobStore

__all__ = ["BatchWorker", "seconds_until_open"]

_log = logging.getLogger("flowopt.batch")
Executor = Callable[[Claimed], Awaitable[Outcome]]
_MAX_SHED_WAIT = 30.0


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def seconds_until_open(windows: Sequence[str], now: dt.datetime | None = None) -> float:
    """0 when ``now`` (UTC) is inside one of the ``HH:MM-HH:MM`` windows (or there are
    none), else the seconds until the next one opens."""
    if not windows:
        return 0.0
    now = now or dt.datetime.now(dt.UTC)
    minute = now.hour * 60 + now.minute + now.second / 60
    best = 24 * 60.0
    for window in windows:
        start_s, end_s = window.split("-")
        start, end = _minutes(start_s), _minutes(end_s)
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if inside:
            return 0.0
        best = min(best, (start - minute) % (24 * 60))
    return best * 60


class BatchWorker:
    """Runs jobs from ``store`` with ``execute`` (a :class:`~.LineExecutor`).

    ``on_line(job_id)`` is called after each committed line (progress).
    """

    def __init__(
        self,
        store: JobStore,
        execute: Executor,
        settings: BatchSettings | None = None,
        *,
        worker_id: str | None = None,
        on_line: Callable[[str], None] | None = None,
        poll_s: float = 1.0,
        backoff_s: float = 0.5,
    ) -> None:
        self.store = store
        self.execute = execute
        self.settings = settings or BatchSettings()
        self.id = worker_id or "worker-" + uuid.uuid4().hex[:12]
        self.on_line = on_line
        self.poll_s = poll_s
        self.backoff_s = backoff_s  # first retry wait when the error names none
        self._registered = False
        self._beat: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Register, free the lines of workers that died, start the heartbeat."""
        if self._registered:
            return
        await asyncio.to_thread(self.store.register, self.id)
        await asyncio.to_thread(self.store.reap, self.settings.lease_s)
        self._registered = True
        self._beat = asyncio.create_task(self._heartbeat())

    async def stop(self) -> None:
        """A clean stop: this worker's unfinished lines go back to pending at once."""
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        if self._registered:
            await asyncio.to_thread(self.store.unregister, self.id)
            self._registered = False

    async def _heartbeat(self) -> None:
        every = self.settings.lease_s / 3
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(self.store.heartbeat, self.id)
                await asyncio.to_thread(self.store.reap, self.settings.lease_s)
            except Exception as exc:  # the store is down: keep beating when it is back
                _log.warning("batch heartbeat failed: %s", type(exc).__name__)

    # -- jobs -------------------------------------------------------------------------------
    async def run_job(self, job_id: str) -> None:
        """Work on ``job_id`` until it is closed (by this worker or another)."""
        await self.start()
        while True:
            lanes = [self._lane(job_id) for _ in range(self.settings.concurrency)]
            await asyncio.gather(*lanes)
            await asyncio.to_thread(self.store.reap, self.settings.lease_s)
            if await asyncio.to_thread(self.store.finish, job_id):
                return
            job = await asyncio.to_thread(self.store.job, job_id, any_tenant=True)
            if job is None or job["status"] not in ("in_progress", "cancelling"):
                return
            counts = await asyncio.to_thread(self.store.counts, job_id)
            if counts.get("pending", 0) and job["status"] == "in_progress":
                continue  # lines came back from a dead worker
            await asyncio.sleep(self.poll_s)  # other workers hold the last lines

    async def run_open_jobs(self) -> int:
        """Every job with work left, oldest first; how many were visited."""
        jobs = await asyncio.to_thread(self.store.open_jobs)
        for job_id in jobs:
            await self.run_job(job_id)
        return len(jobs)

    async def _lane(self, job_id: str) -> None:
        while True:
            wait = seconds_until_open(self.settings.windows)
            if wait > 0:
                job = await asyncio.to_thread(self.store.job, job_id, any_tenant=True)
                if job is None or job["status"] != "in_progress" or job["expires_at"] < time.time():
                    return  # nothing to wait for: finish() closes it
                await asyncio.sleep(min(wait, 60.0))
                continue
            lines = await asyncio.to_thread(self.store.claim, job_id, self.id, 1)
            if not lines:
                return
            await self.run_line(lines[0])

    async def run_line(self, line: Claimed) -> None:
        """Run one claimed line (retrying as configured) and commit its record."""
        attempts = 0
        while True:
            outcome = await self.execute(line)
            if outcome.retry and outcome.shed:
                await asyncio.sleep(min(max(outcome.wait_s, self.backoff_s), _MAX_SHED_WAIT))
                continue
            attempts += 1
            if outcome.retry and attempts < self.settings.max_attempts:
                await asyncio.sleep(min(max(outcome.wait_s, self.backoff_s * 2**attempts), 60.0))
                continue
            break
        record = output_record(line.custom_id, outcome.status, outcome.body, outcome.request_id)
        ok = outcome.status == 200
        kept = await asyncio.to_thread(self.store.complete, line, self.id, ok=ok, record=record)
        if not kept:
            _log.warning(
                "batch %s line %d was taken over by another worker; its answer is dropped",
                line.job_id,
                line.number,
            )
        if self.on_line is not None:
            self.on_line(line.job_id)
