"""``flowopt serve SPEC``: the pipeline as an OpenAI-compatible HTTP server."""

from __future__ import annotations

import click

__all__ = ["serve"]


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--host",
    default=None,
    help="Interface to bind (default: spec gateway.host, "
    "else 127.0.0.1). Keep loopback unless API keys are configured.",
)
@click.option(
    "--port", type=int, default=None, help="Port (default: spec gateway.port, else 8000)."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes; each runs its own copy of the pipeline.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=None,
    help="Largest request body accepted; larger ones get 413 before they are read "
    "(default: spec gateway.max_body_bytes, else 4 MiB).",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="One line per request (method, path, status); never bodies or keys.",
)
def serve(
    spec: str,
    host: str | None,
    port: int | None,
    workers: int,
    max_body_bytes: int | None,
    log_level: str,
    access_log: bool,
) -> None:
    """Serve SPEC over the OpenAI API: /v1/chat/completions, /v1/completions,
    /v1/embeddings, /v1/models, /v1/files + /v1/batches (batch jobs), /health, /metrics.
    Any OpenAI client works unchanged; point its base URL at /v1."""
    from flowopt.gateway.server import serve as run_server

    run_server(
        spec,
        host=host,
        port=port,
        workers=workers,
        max_body_bytes=max_body_bytes,
        log_level=log_level,
        access_log=access_log,
    )
