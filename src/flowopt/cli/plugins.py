"""``flowopt plugins list``: every registered name, by kind, and where it comes from."""

from __future__ import annotations

import json

import click

from flowopt import registry

__all__ = ["command"]


@click.group(name="plugins")
def command() -> None:
    """Inspect registered middleware, backends and stores."""


@command.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """List every registered middleware, backend, store and guesser with its distribution."""
    import flowopt.speculate  # noqa: F401  (registers the built-in guessers in-process)

    rows = []
    for reg in (registry.middleware, registry.backends, registry.stores, registry.guessers):
        for name, entry in sorted(reg.entries().items()):
            rows.append(
                {
                    "kind": reg.kind,
                    "name": name,
                    "target": entry.value,
                    "distribution": entry.distribution,
                }
            )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=4)
    kind = None
    for r in rows:
        if r["kind"] != kind:
            kind = r["kind"]
            click.secho(f"{kind}:", bold=True)
        click.echo(f"  {r['name']:<{width}}  {r['target']}  ({r['distribution']})")
