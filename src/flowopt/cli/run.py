"""``flowopt run``, ``flowopt validate`` and ``flowopt schema``."""

from __future__ import annotations

import asyncio
import json
import sys

import click

from flowopt.cli.render import echo_summary
from flowopt.pipeline import Pipeline, load
from flowopt.prompt_layout import layout_warnings
from flowopt.result import Result, TokenEvent
from flowopt.spec import load_spec
from flowopt.spec_schema import spec_json_schema
from flowopt.tracing import configure_from_env

__all__ = ["run", "schema", "validate"]


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
def validate(spec: str) -> None:
    """Check SPEC: fields, names of middleware/backends, step graph. Exit 0 when valid.
    Warns (without failing) about templates that defeat the server's prefix cache."""
    parsed = load_spec(spec)
    Pipeline(parsed)  # resolves registry names and the graph; nothing is contacted
    for warning in layout_warnings(parsed):
        click.secho(f"{spec}: warning: {warning}", fg="yellow", err=True)
    click.echo(f"{spec}: ok ({len(parsed.steps)} steps, {len(parsed.middleware)} middleware)")


@click.command()
def schema() -> None:
    """Print the JSON Schema of pipeline specs, with the options of every registered
    middleware (for editor completion)."""
    click.echo(json.dumps(spec_json_schema(), indent=2))


async def _run(
    pipe: Pipeline,
    text: str,
    user: str | None,
    tenant: str | None,
    stream: bool,
    show: bool,
    timeout: float | None,
) -> Result:
    try:
        if not stream:
            return await pipe.ainvoke(text, user=user, tenant=tenant, timeout=timeout)
        result: Result | None = None
        async for ev in pipe.astream(text, user=user, tenant=tenant, timeout=timeout):
            if isinstance(ev, TokenEvent) and show:
                sys.stdout.write(ev.text)
                sys.stdout.flush()
            elif isinstance(ev, Result):
                result = ev
        if show:
            sys.stdout.write("\n")
        assert result is not None
        return result
    finally:
        await pipe.aclose()


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--input", "text", required=True, help="The user's input text.")
@click.option("--user", default=None, help="User id (caches and limits partition by it).")
@click.option("--tenant", default=None, help="Tenant id.")
@click.option("--stream/--no-stream", default=False, help="Stream tokens as they arrive.")
@click.option("--timeout", type=float, default=None, help="Deadline for the run, seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def run(
    spec: str,
    text: str,
    user: str | None,
    tenant: str | None,
    stream: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Run SPEC once on --input and print the answer (or --json).

    Spans go to the spec's exporter (``tracing: {exporter: ...}``), else to the one named
    by ``OTEL_TRACES_EXPORTER`` (``otlp``/``console``), else nowhere."""
    configure_from_env()
    pipe = load(spec)
    result = asyncio.run(_run(pipe, text, user, tenant, stream, not as_json, timeout))
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    if not stream:
        click.echo(result.text)
    echo_summary(result)
