"""``flowopt triage train`` and ``flowopt triage eval``: build and measure routers on
labelled data (JSONL with prompt, weak_score, strong_score), offline."""

from __future__ import annotations

import json
from typing import Any

import click
import numpy as np

__all__ = ["triage"]


@click.group()
def triage() -> None:
    """Train and evaluate triage routers on labelled prompts."""


@triage.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--out", default="router.npz", show_default=True, help="Router file to write.")
@click.option("--holdout", default=0.3, show_default=True, help="Share kept out of training.")
@click.option("--seed", default=0, show_default=True, help="Seed of the hold-out split.")
@click.option(
    "--k", "k", default=None, type=int, help="Neighbours (default: chosen by leave-one-out)."
)
def train(file: str, out: str, holdout: float, seed: int, k: int | None) -> None:
    """Embed FILE's prompts (minus the hold-out) and write an embedding router."""
    from flowopt.routing.classifiers.embedding import EmbeddingRouter
    from flowopt.routing.evaluate import load_examples, split, summarize

    examples = load_examples(file)
    tr, te = split(examples, holdout, seed)
    click.echo(f"{len(examples)} examples: training on {len(tr)}, holding out {len(te)}")
    router = EmbeddingRouter.fit(
        [e.prompt for e in tr], [e.weak for e in tr], [e.strong for e in tr]
    )
    weak = np.array([e.weak for e in tr])
    strong = np.array([e.strong for e in tr])
    choices = [k] if k else [8, 16, 32, 64, 128]
    best: tuple[float, int] = (-1.0, choices[0])
    for kk in choices:
        router.k = min(kk, len(tr) - 1)
        s = summarize(router.score_vectors(router.embeddings, exclude_self=True), weak, strong)
        click.echo(f"  k={kk:<4d} leave-one-out APGR {s['apgr']:.3f}")
        best = max(best, (s["apgr"], kk))
    router.k = best[1]
    router.save(out)
    click.echo(
        f"wrote {out} (k={router.k}); evaluate with: flowopt triage eval {file} --router {out}"
    )


def _rules_scores(prompts: list[str]) -> Any:
    from flowopt.routing.classifiers.rules import RulesClassifier
    from flowopt.types import Request

    rc = RulesClassifier(
        [{"pattern": r"\d", "then": 1.0}, {"min_chars": 400, "then": 0.7}], default_score=0.0
    )
    return np.array([rc.classify_sync(Request.chat(p)).score for p in prompts], dtype=np.float32)


@triage.command(name="eval")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--router", "router_path", default=None, help="Router file from `triage train`.")
@click.option(
    "--classifier", type=click.Choice(["embedding", "rules", "random"]), default="embedding"
)
@click.option("--holdout", default=0.3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--all", "use_all", is_flag=True, help="Evaluate on every row (not only the hold-out)."
)
@click.option(
    "--price-ratio",
    default=0.05,
    show_default=True,
    help="Cost of a cheap call / a strong call, for the cost-saved figures.",
)
@click.option("--json", "as_json", is_flag=True)
def evaluate(
    file: str,
    router_path: str | None,
    classifier: str,
    holdout: float,
    seed: int,
    use_all: bool,
    price_ratio: float,
    as_json: bool,
) -> None:
    """Measure a router on FILE's hold-out: strong-call share and cost saved at 90/95% of
    strong quality, APGR, per benchmark."""
    from flowopt.errors import ConfigError
    from flowopt.routing.evaluate import load_examples, split, summarize

    examples = load_examples(file)
    test = examples if use_all else split(examples, holdout, seed)[1]
    prompts = [e.prompt for e in test]
    if classifier == "embedding":
        if router_path is None:
            raise ConfigError(
                "--router is required for the embedding classifier",
                hint="train one: flowopt triage train FILE --out router.npz",
            )
        from flowopt.routing.classifiers.embedding import EmbeddingRouter

        scores = EmbeddingRouter.load(router_path).score_texts(prompts)
    elif classifier == "rules":
        scores = _rules_scores(prompts)
    else:
        scores = np.random.default_rng(seed).random(len(test)).astype(np.float32)
    report: dict[str, Any] = {"file": file, "classifier": classifier, "rows": len(test)}
    groups = {"all": list(range(len(test)))}
    for b in sorted({e.benchmark for e in test}):
        groups[b] = [i for i, e in enumerate(test) if e.benchmark == b]
    for name, idx in groups.items():
        ix = np.array(idx)
        report[name] = summarize(
            scores[ix],
            np.array([test[i].weak for i in idx]),
            np.array([test[i].strong for i in idx]),
            price_ratio=price_ratio,
        )
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{classifier} router on {len(test)} held-out rows of {file}")
    for name in groups:
        s = report[name]
        click.echo(
            f"  {name:6s} n={s['n']:<5d} weak {s['weak_quality']:.3f} "
            f"strong {s['strong_quality']:.3f} APGR {s['apgr']:.3f} | "
            f"strong share @95%: {s['strong_share_at_95pct']:.2f} "
            f"(random {s['random_strong_share_at_95pct']:.2f}) "
            f"cost saved {s['cost_saved_at_95pct']:.0%} | "
            f"@90%: {s['strong_share_at_90pct']:.2f} "
            f"(random {s['random_strong_share_at_90pct']:.2f})"
        )
