"""``flowopt batch run``: one input file through a spec's pipeline, resumable by job id.

Why the gateway's objects without its HTTP server: a line must get exactly the answer
``POST /v1/chat/completions`` would give (same parser, model table, middleware), and the
shell run shares the job store with ``flowopt serve``, so a job started from one can be
watched or resumed from the other.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowopt.batch._execute import LineExecutor
from flowopt.batch.store import JobStore, open_store
from flowopt.batch.worker import BatchWorker
from flowopt.errors import ConfigError

__all__ = ["run_file"]


def _write(store: JobStore, fid: str | None, path: Path, tenant: str | None) -> None:
    data = store.file_content(fid, tenant) if fid else b""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data or b"")


def _absolute(where: str) -> str:
    """A sqlite path made absolute: Ray's workers may not share this process's directory."""
    return where if "://" in where else os.path.abspath(os.path.expanduser(where))


async def run_file(
    spec: str | Path,
    input_path: str | Path,
    *,
    out: str | Path,
    errors: str | Path,
    job_id: str | None = None,
    store: str | None = None,
    endpoint: str = "/v1/chat/completions",
    tenant: str | None = None,
    metadata: dict[str, str] | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    engine: str = "local",
    ray_actors: int = 2,
) -> dict[str, Any]:
    """Run (or resume, when ``job_id`` names a job in the store) a batch; write its
    output and error files; the final batch object.

    ``metadata`` goes on a new job's batch object (``{"distill": "allow"}``: its answers
    may be exported for distillation). ``engine="ray"`` runs the lines on the Ray cluster
    ``ray.init`` connects to (:mod:`flowopt.batch._ray`, ``ray_actors`` pipelines) instead
    of in this process."""
    from flowopt.gateway.app import Gateway
    from flowopt.pipeline import load

    if engine == "ray":  # before anything is created: fail with the install hint
        from flowopt.batch._ray import require_ray

        require_ray()
    pipe = load(spec)
    gw = Gateway(pipe)
    settings = gw.settings.batch
    where = _absolute(store or settings.store)
    jobs = await asyncio.to_thread(open_store, where)
    try:
        job = await asyncio.to_thread(jobs.job, job_id, tenant) if job_id else None
        if job is None:
            path = Path(input_path)
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the input file {str(path)!r}: {exc.strerror}",
                    hint="a JSONL file of batch lines",
                ) from None
            info = await asyncio.to_thread(
                jobs.put_file, data, filename=path.name, purpose="batch", tenant=tenant
            )
            job = await asyncio.to_thread(
                lambda: jobs.create_job(
                    input_file_id=info["id"],
                    endpoint=endpoint,
                    tenant=tenant,
                    job_id=job_id,
                    metadata=metadata,
                )
            )
        assert job is not None
        if on_start is not None:
            on_start(job)
        if engine == "ray":
            from flowopt.batch._ray import run_on_ray

            await asyncio.to_thread(run_on_ray, spec, where, job["id"], actors=ray_actors)
        else:
            await _run_here(gw, jobs, job["id"], on_line)
        final = await asyncio.to_thread(jobs.job, job["id"], tenant)
        assert final is not None
        _write(jobs, final["output_file_id"], Path(out), tenant)
        _write(jobs, final["error_file_id"], Path(errors), tenant)
        return dict(final)
    finally:
        await pipe.aclose()
        jobs.close()


async def _run_here(
    gw: Any, jobs: JobStore, job_id: str, on_line: Callable[[str], None] | None
) -> None:
    """The local engine: this process's pipeline, ``concurrency`` lines in flight."""
    settings = gw.settings.batch
    await gw.pipe.start()
    await gw.models.refresh()
    worker = BatchWorker(jobs, LineExecutor(gw, settings.priority), settings, on_line=on_line)
    try:
        await worker.run_job(job_id)
    finally:
        await worker.stop()
