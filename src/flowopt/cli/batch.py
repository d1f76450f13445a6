"""``flowopt batch run FILE --spec SPEC``: an OpenAI batch input file, from the shell."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

__all__ = ["command"]


class _Progress:
    """``done/total lines`` on stderr, redrawn at most ten times a second."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self._drawn = 0.0

    def start(self, job: dict[str, Any]) -> None:
        counts = job["request_counts"]
        self.total = counts["total"]
        self.done = counts["completed"] + counts["failed"]
        click.echo(f"batch {job['id']} ({self.total} lines)", err=True)
        self.draw(force=True)

    def line(self, _job_id: str) -> None:
        self.done += 1
        self.draw()

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < 0.1 and self.done < self.total:
            return
        self._drawn = now
        width = 30
        filled = width * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} lines")
        sys.stderr.flush()


@click.group("batch")
def command() -> None:
    """Batch jobs (OpenAI Batch API files): run one from the shell."""


@command.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--spec", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--out", default=None, help="Output JSONL (default: FILE's name + .output.jsonl).")
@click.option("--errors", default=None, help="Error JSONL (default: FILE's name + .errors.jsonl).")
@click.option(
    "--job-id",
    default=None,
    help="Name the job; run again with the same id to resume it (only unfinished lines run).",
)
@click.option(
    "--store",
    default=None,
    help="sqlite path or postgresql:// URL (default: the spec's "
    "gateway.batch.store, else ~/.cache/flowopt/batch.sqlite).",
)
@click.option(
    "--endpoint",
    default="/v1/chat/completions",
    show_default=True,
    type=click.Choice(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]),
)
@click.option("--tenant", default=None, help="Tenant the lines run as (limits, caches).")
@click.option(
    "--engine",
    default="local",
    show_default=True,
    type=click.Choice(["local", "ray"]),
    help="local: this process; ray: Ray Data on the cluster RAY_ADDRESS names (else a "
    "local one); needs the ray extra.",
)
@click.option("--ray-actors", default=2, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--metadata",
    "metadata",
    multiple=True,
    help="KEY=VALUE on the batch object (repeatable), as batches.create(metadata=...); "
    "distill=allow lets `flowopt distill export` use its answers.",
)
def run(
    file: str,
    spec: str,
    out: str | None,
    errors: str | None,
    job_id: str | None,
    store: str | None,
    endpoint: str,
    tenant: str | None,
    engine: str,
    ray_actors: int,
    metadata: tuple[str, ...],
) -> None:
    """Run every line of FILE through SPEC's pipeline; write the output and error files.

    Lines run concurrently at batch priority; each answer is committed as it lands, so an
    interrupted run resumes with --job-id and never answers a custom_id twice."""
    from flowopt.batch import run_file
    from flowopt.tracing import configure_from_env

    configure_from_env()
    meta: dict[str, str] = {}
    for item in metadata:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--metadata")
        meta[key] = value
    base = Path(file)
    stem = base.name.removesuffix(".jsonl")
    out_path = Path(out) if out else base.with_name(stem + ".output.jsonl")
    err_path = Path(errors) if errors else base.with_name(stem + ".errors.jsonl")
    progress = _Progress()
    job = asyncio.run(
        run_file(
            spec,
            file,
            out=out_path,
            errors=err_path,
            job_id=job_id,
            store=store,
            endpoint=endpoint,
            tenant=tenant,
            metadata=meta or None,
            on_start=progress.start,
            on_line=progress.line,
            engine=engine,
            ray_actors=ray_actors,
        )
    )
    sys.stderr.write("\n")
    counts = job["request_counts"]
    click.echo(
        json.dumps(
            {
                "id": job["id"],
                "status": job["status"],
                "completed": counts["completed"],
                "failed": counts["failed"],
                "output": str(out_path),
                "errors": str(err_path),
            }
        )
    )
    if job["status"] == "failed":
        sys.exit(1)
