"""``flowopt batch run --engine ray``: a job's lines as a Ray dataset, run by Ray's workers.

Why Ray Data and not Ray Serve: a batch is a dataset to map over, and Ray Data spreads
its blocks over every node of a cluster with back-pressure; the gateway's hot path stays
out of Ray (Ray Serve's Python proxy is a reported bottleneck for interactive traffic).

Each Ray actor (:class:`_Lines`) builds the spec's pipeline once, registers as a batch
worker in the same store as the local engine, and for each block of line numbers claims
those still pending (``JobStore.claim_numbers``), runs them concurrently through the
pipeline at batch priority and commits each answer. The driver then closes the job and
writes the output files, so the exactly-once output is the store's, whatever engine ran
the lines. A Ray worker that dies leaves its lines ``running``; the driver frees them
(lease, or process gone) and maps again over what is left. On many nodes the store must
be the shared Postgres (a sqlite file is one machine's).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from flowopt.errors import MissingDependencyError

__all__ = ["require_ray", "run_on_ray"]


def require_ray() -> Any:
    """The ``ray`` module, or a MissingDependencyError naming the ``ray`` extra."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError("ray", "ray", "flowopt batch run --engine ray") from None
    return ray


class _Lines:
    """One Ray actor: a pipeline, a gateway's model table and a batch worker."""

    def __init__(self, spec: str, store: str, job_id: str) -> None:
        from flowopt.batch._execute import LineExecutor
        from flowopt.batch.store import open_store
        from flowopt.batch.worker import BatchWorker
        from flowopt.gateway.app import Gateway
        from flowopt.pipeline import load

        self.loop = asyncio.new_event_loop()
        self.job_id = job_id
        self.pipe = load(spec)
        gw = Gateway(self.pipe)
        settings = gw.settings.batch
        self.store = open_store(store)
        self.worker = BatchWorker(self.store, LineExecutor(gw, settings.priority), settings)
        self.concurrency = settings.concurrency
        self.loop.run_until_complete(self._start(gw))

    async def _start(self, gw: Any) -> None:
        await self.pipe.start()
        await gw.models.refresh()
        await self.worker.start()

    def __call__(self, block: dict[str, Any]) -> dict[str, Any]:
        numbers = [int(n) for n in block["number"]]
        lines = self.store.claim_numbers(self.job_id, self.worker.id, numbers)
        return {"number": [line.number for line in self.loop.run_until_complete(self._run(lines))]}

    async def _run(self, lines: list[Any]) -> list[Any]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(line: Any) -> Any:
            async with gate:
                await self.worker.run_line(line)
            return line

        return list(await asyncio.gather(*(one(line) for line in lines)))


def run_on_ray(
    spec: str | Path, store: str, job_id: str, *, actors: int = 2, block: int = 16
) -> None:
    """Run the open lines of ``job_id`` on the Ray cluster ``ray.init`` connected to
    (a local one when none is), with ``actors`` pipelines; return when the job is closed."""
    from flowopt.batch.store import open_store

    ray = require_ray()
    if not ray.is_initialized():
        ray.init()
    jobs = open_store(store)
    try:
        while True:
            jobs.reap(lease_s=jobs_lease(spec))
            pending = jobs.pending_numbers(job_id)
            if pending:
                ds = ray.data.from_items([{"number": n} for n in pending])
                ds.map_batches(
                    _Lines,
                    fn_constructor_kwargs={"spec": str(spec), "store": store, "job_id": job_id},
                    batch_size=block,
                    concurrency=actors,
                ).materialize()
            if jobs.finish(job_id):
                return
            job = jobs.job(job_id, any_tenant=True)
            if job is None or job["status"] not in ("in_progress", "cancelling"):
                return
            if not jobs.pending_numbers(job_id):
                time.sleep(1.0)  # lines held by a worker that has not been reaped yet
    finally:
        jobs.close()


def jobs_lease(spec: str | Path) -> float:
    from flowopt.spec import load_spec

    parsed = load_spec(spec)
    return (parsed.gateway.batch.lease_s if parsed.gateway else 30.0) or 30.0
