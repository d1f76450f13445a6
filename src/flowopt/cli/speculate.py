"""``flowopt speculate train``: fit a TF-IDF + logistic-regression guesser for a
speculated edge from labelled text (JSONL), offline."""

from __future__ import annotations

import json
import random

import click

from flowopt.errors import ConfigError

__all__ = ["command"]


@click.group(name="speculate")
def command() -> None:
    """Train guessers for workflow speculation (docs/speculation.md)."""


@command.command()
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="JSONL, one {text, label} object a line.",
)
@click.option("--out", required=True, help="Model file to write (.npz).")
@click.option("--text-field", default="text", show_default=True)
@click.option(
    "--label-field",
    default="intent",
    show_default=True,
    help="The field holding step A's output (a recorded trace's output, or a gold label).",
)
@click.option(
    "--split",
    default="train",
    show_default=True,
    help="Use only rows whose 'split' is this ('' for every row).",
)
@click.option(
    "--holdout", default=0.1, show_default=True, help="Share kept out to report accuracy."
)
@click.option("--seed", default=0, show_default=True)
def train(
    data: str, out: str, text_field: str, label_field: str, split: str, holdout: float, seed: int
) -> None:
    """Fit a TF-IDF guesser on DATA and write it to OUT.

    Use it in a spec as ``guesser: {tfidf: {model: OUT}}``. Train on what step A really
    returned (recorded traces) rather than on gold labels where you can: the guess is
    judged against A's output."""
    from flowopt.speculate._tfidf import fit

    rows = []
    with open(data, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, label = row[text_field], row[label_field]
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{data} line {n}: not a JSON object with {text_field!r} and "
                    f"{label_field!r} ({exc})",
                    hint="pass --text-field/--label-field naming the fields",
                ) from None
            if not split or row.get("split", split) == split:
                rows.append((str(text), str(label)))
    random.Random(seed).shuffle(rows)
    cut = int(len(rows) * (1 - holdout))
    tr, te = rows[:cut], rows[cut:]
    if not tr:
        raise ConfigError(f"{data}: no rows to train on", hint="check --split")
    model = fit([t for t, _ in tr], [lab for _, lab in tr])
    if te:
        right = sum(model.classes[int(model.proba(t).argmax())] == lab for t, lab in te)
        click.echo(f"held-out top-1 accuracy {right / len(te):.3f} on {len(te)} rows")
    model.save(out)
    click.echo(f"trained on {len(tr)} rows, {len(model.classes)} labels -> {out}")
