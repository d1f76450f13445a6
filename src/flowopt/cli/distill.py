"""``flowopt distill export``: the strong model's accepted answers as a fine-tuning set.

::

    flowopt distill export --since 7d --out train.jsonl [--holdout 0.1]
                           [--source cache[:DIR|:postgresql://...]] [--source batch[:FILE|:URL]]
                           [--tenant T] [--model M] [--pii-pattern NAME=REGEX] [--json]

What is kept and why: :mod:`flowopt.distill.export` and docs/distill.md.
"""

from __future__ import annotations

import json

import click

__all__ = ["command"]


@click.group(name="distill")
def command() -> None:
    """Distillation data from traffic (docs/distill.md)."""


def _patterns(values: tuple[str, ...]) -> dict[str, str]:
    from flowopt.distill.errors import DistillError

    out: dict[str, str] = {}
    for value in values:
        name, sep, regex = value.partition("=")
        if not sep or not name or not regex:
            raise DistillError(
                f"--pii-pattern {value[:40]!r} is not NAME=REGEX",
                hint=r"for example --pii-pattern employee_id='EMP-\d{6}'",
            )
        out[name] = regex
    return out


@command.command("export")
@click.option(
    "--since", required=True, help="Answers from then on: 2026-12-01, 2026-12-01T08:00Z, 24h, 7d."
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Training JSONL.")
@click.option(
    "--holdout",
    default=0.1,
    show_default=True,
    type=float,
    help="Share of prompts held out (chosen by a hash of the prompt: stable across runs).",
)
@click.option(
    "--holdout-out",
    default=None,
    type=click.Path(dir_okay=False),
    help="Held-out JSONL (default: OUT's name + .holdout.jsonl).",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    help="cache[:DIR|:postgresql://...] or batch[:FILE|:postgresql://...]; repeatable "
    "(default: the default cache directory and batch store, those that exist).",
)
@click.option("--tenant", "tenants", multiple=True, help="Only these tenants (repeatable).")
@click.option(
    "--model", "models", multiple=True, help="Only answers of these models: the strong tier."
)
@click.option("--pii-pattern", "pii", multiple=True, help="Extra personal-data pattern NAME=REGEX.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def export_cmd(
    since: str,
    out: str,
    holdout: float,
    holdout_out: str | None,
    sources: tuple[str, ...],
    tenants: tuple[str, ...],
    models: tuple[str, ...],
    pii: tuple[str, ...],
    as_json: bool,
) -> None:
    """Write accepted, consented, PII-free, deduplicated answers as chat fine-tuning JSONL."""
    from flowopt.distill import export
    from flowopt.distill._since import parse_since

    report = export(
        out,
        since=parse_since(since),
        sources=sources,
        holdout=holdout,
        holdout_out=holdout_out,
        tenants=tenants,
        models=models,
        pii_patterns=_patterns(pii),
    )
    summary = {
        "train": report.train,
        "holdout": report.holdout,
        "train_path": str(report.train_path),
        "holdout_path": None if report.holdout_path is None else str(report.holdout_path),
        "read": report.read,
        "dropped": dict(sorted(report.dropped.items())),
        "skipped_sources": list(report.skipped_sources),
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"train   {report.train:6d}  {report.train_path}")
    if report.holdout_path is not None:
        click.echo(f"holdout {report.holdout:6d}  {report.holdout_path}")
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(report.dropped.items())) or "none"
    click.echo(f"read {report.read}; dropped: {dropped}")
    for source in report.skipped_sources:
        click.echo(f"skipped {source}: no store there", err=True)
