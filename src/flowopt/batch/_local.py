"""``flowopt batch run``: one input file through a spec's pipeline, resumable by job id.

Why the gateway's objects without its HTTP server: a line must get exactly the answer
``POST /v1/chat/completions`` would give (same parser, model table, middleware), and the
shell run shares the job store with ``flowopt serve``, so a job started from one can be
watched or resumed from the other.
"""

from __future__ import annotations

import asyncio
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
    on_start: Callable[[dict[str, Any]], None] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume, when ``job_id`` names a job in the store) a batch; write its
    output and error files; the final batch object."""
    from flowopt.gateway.app import Gateway
    from flowopt.pipeline import load

    pipe = load(spec)
    gw = Gateway(pipe)
    settings = gw.settings.batch
    jobs = await asyncio.to_thread(open_store, store or settings.store)
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
                    input_file_id=info["id"], endpoint=endpoint, tenant=tenant, job_id=job_id
                )
            )
        assert job is not None
        if on_start is not None:
            on_start(job)
        await pipe.start()
        await gw.models.refresh()
        worker = BatchWorker(jobs, LineExecutor(gw, settings.priority), settings, on_line=on_line)
        try:
            await worker.run_job(job["id"])
        finally:
            await worker.stop()
        final = await asyncio.to_thread(jobs.job, job["id"], tenant)
        assert final is not None
        _write(jobs, final["output_file_id"], Path(out), tenant)
        _write(jobs, final["error_file_id"], Path(errors), tenant)
        return dict(final)
    finally:
        await pipe.aclose()
        jobs.close()
