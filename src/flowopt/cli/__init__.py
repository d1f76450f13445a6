"""The ``flowopt`` command line. Each sub-command lives in its own module; this one only
assembles them and turns flowopt errors into a clear message and an exit code
(2 for configuration errors, 1 for run-time errors) instead of a traceback."""

from __future__ import annotations

import importlib
import os
import sys

import click

from flowopt.errors import ConfigError, FlowoptError

__all__ = ["cli", "main"]

# (module, attribute) of every sub-command, in help order.
_COMMANDS: tuple[tuple[str, str], ...] = (
    ("flowopt.cli.run", "run"),
    ("flowopt.cli.run", "validate"),
    ("flowopt.cli.run", "schema"),
    ("flowopt.cli.demo", "demo"),
    ("flowopt.cli.plugins", "command"),
    ("flowopt.cli.backend", "command"),
    ("flowopt.cli.serve", "serve"),
    ("flowopt.cli.bench", "bench"),
    ("flowopt.cli.triage", "triage"),
    ("flowopt.cli.cache", "command"),
    ("flowopt.cli.memory", "command"),
    ("flowopt.cli.compress", "command"),
    ("flowopt.cli.batch", "command"),
    ("flowopt.cli.distill", "command"),
    ("flowopt.cli.speculate", "command"),
)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except FlowoptError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(2 if isinstance(exc, ConfigError) else 1)


@click.group(cls=_Group)
@click.version_option(package_name="flowopt")
def cli() -> None:
    """flowopt: declarative LLM pipelines with optimization middleware over vLLM."""


for _module, _attr in _COMMANDS:
    cli.add_command(getattr(importlib.import_module(_module), _attr))


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.exit(cli.main(prog_name="flowopt", standalone_mode=True))
