"""``flowopt cache``: inspect, invalidate and measure the answer cache.

::

    flowopt cache stats      [--store gptcache] [--path DIR | --dsn DSN] [--json]
    flowopt cache invalidate [--tenant T] [--model-identity M] [--tag X] [store options]
    flowopt cache clear      [--yes] [store options]
    flowopt cache eval --pairs FILE.jsonl [--threshold T] [--no-verify]
                       [--protocol pairwise|crowded|both] [--limit N] [--json] [--plot out.png]

``eval`` runs the pairs-file protocols through the cache engine the middleware uses
(:mod:`flowopt.cache.evaluation`), so the numbers are those of the real decision path.
Store commands open the store the way a pipeline does (by registered name).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["command"]


def _store_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--store", default="gptcache", show_default=True, help="store name")(f)
    f = click.option("--path", default=None, help="directory of the embedded store")(f)
    f = click.option("--dsn", default=None, help="Postgres DSN (store postgres)")(f)
    f = click.option("--url", default=None, help="Redis URL (store redis)")(f)
    return f


def _open(store: str, path: str | None, dsn: str | None, url: str | None) -> Any:
    from flowopt.cache.stores import open_store

    opts: dict[str, Any] = {}
    if path:
        opts["path"] = path
    if dsn:
        opts["dsn"] = dsn
    if url:
        opts["url"] = url
    return open_store(store, **opts)


@click.group(name="cache")
def command() -> None:
    """Inspect, invalidate and measure the semantic answer cache."""


@command.command()
@_store_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def stats(store: str, path: str | None, dsn: str | None, url: str | None, as_json: bool) -> None:
    """Entries, partitions and entries per tenant."""
    s = _open(store, path, dsn, url)
    try:
        st = s.stats()
    finally:
        s.close()
    data = {
        "store": store,
        "entries": st.entries,
        "partitions": st.partitions,
        "tenants": st.tenants,
        **st.detail,
    }
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"store {store}: {st.entries} entries in {st.partitions} partitions")
    for k, v in st.detail.items():
        click.echo(f"  {k}: {v}")
    for tenant, n in sorted(st.tenants.items()):
        click.echo(f"  tenant {tenant}: {n}")


@command.command()
@_store_options
@click.option("--tenant", default=None, help="remove this tenant's entries")
@click.option("--model-identity", default=None, help="remove entries of this model identity")
@click.option("--tag", default=None, help="remove entries carrying this tag")
def invalidate(
    store: str,
    path: str | None,
    dsn: str | None,
    url: str | None,
    tenant: str | None,
    model_identity: str | None,
    tag: str | None,
) -> None:
    """Remove the entries matching every given criterion."""
    if tenant is None and model_identity is None and tag is None:
        raise click.UsageError("give at least one of --tenant, --model-identity, --tag")
    s = _open(store, path, dsn, url)
    try:
        n = s.invalidate(tenant=tenant, model_identity=model_identity, tag=tag)
    finally:
        s.close()
    click.echo(f"removed {n} entries")


@command.command()
@_store_options
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def clear(store: str, path: str | None, dsn: str | None, url: str | None, yes: bool) -> None:
    """Remove every entry of the store."""
    if not yes:
        click.confirm(f"remove every entry of the {store} cache store?", abort=True)
    s = _open(store, path, dsn, url)
    try:
        n = s.clear()
    finally:
        s.close()
    click.echo(f"removed {n} entries")


def _plot(results: dict[str, Any], out: Path, threshold: float, verify: bool) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        from flowopt.errors import MissingDependencyError

        raise MissingDependencyError("matplotlib", "cache", "`flowopt cache eval --plot`") from exc
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, res in results.items():
        # A fine sweep for the line, the grid points as markers.
        probs = sorted({o.probability for o in res.outcomes if o.probability is not None})
        step = max(1, len(probs) // 400)
        pts = [res.at(t) for t in probs[::step]]
        pts = [p for p in pts if p["precision"] is not None]
        ax.plot([p["recall"] for p in pts], [p["precision"] for p in pts], label=name)
        op = res.at(threshold)
        if op["precision"] is not None:
            ax.scatter([op["recall"]], [op["precision"]], marker="o")
    ax.axhline(0.95, color="grey", lw=0.6, ls="--")
    ax.axvline(0.5, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("recall of duplicates")
    ax.set_ylabel("precision of served hits")
    kind = "verifier probability" if verify else "cosine"
    ax.set_title(f"flowopt cache eval (threshold on {kind}; dot = {threshold:.3g})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0.5, 1.0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


@command.command(name="eval")
@click.option("--pairs", "pairs_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="verifier probability (or cosine with --no-verify)",
)
@click.option(
    "--operating-point",
    default="default",
    show_default=True,
    help="default, strict, lenient, or a target precision such as p93",
)
@click.option("--no-verify", is_flag=True, help="bare cosine threshold (the baseline)")
@click.option(
    "--min-cosine", type=float, default=None, help="candidate cut-off before verification"
)
@click.option(
    "--protocol",
    type=click.Choice(["pairwise", "crowded", "both"]),
    default="both",
    show_default=True,
)
@click.option("--limit", type=int, default=None, help="use the first N pairs")
@click.option("--json", "as_json", is_flag=True, help="print the full JSON report")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="write a PNG curve")
def eval_(
    pairs_path: str,
    threshold: float | None,
    operating_point: str,
    no_verify: bool,
    min_cosine: float | None,
    protocol: str,
    limit: int | None,
    as_json: bool,
    plot: str | None,
) -> None:
    """Precision, recall and false hits of the cache on a labelled pairs file."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from flowopt.cache.config import CacheConfig
    from flowopt.cache.embedder import MiniLMEmbedder
    from flowopt.cache.evaluation import evaluate, load_pairs
    from flowopt.cache.verifier import LearnedVerifier

    pairs = load_pairs(pairs_path)
    if limit:
        pairs = pairs[:limit]
    opts: dict[str, Any] = {"verify": not no_verify, "operating_point": operating_point}
    if threshold is not None:
        opts["threshold"] = threshold
    if min_cosine is not None:
        opts["min_cosine"] = min_cosine
    config = CacheConfig(store="memory", **opts)
    verifier = None
    if config.verify:
        verifier = LearnedVerifier(threshold=config.threshold, operating_point=operating_point)
    embedder = MiniLMEmbedder()
    protocols = ("pairwise", "crowded") if protocol == "both" else (protocol,)
    if not as_json:
        click.echo(
            f"embedding {2 * len(pairs)} questions and running {', '.join(protocols)}...", err=True
        )
    results = evaluate(
        pairs, config=config, embedder=embedder, verifier=verifier, protocols=protocols
    )
    threshold_used = next(iter(results.values())).threshold if results else 0.0
    report: dict[str, Any] = {
        "pairs": str(pairs_path),
        "n_pairs": len(pairs),
        "verify": config.verify,
        "min_cosine": config.min_cosine,
        "threshold": threshold_used,
        **{name: r.to_dict() for name, r in results.items()},
    }
    if plot:
        _plot(results, Path(plot), threshold_used, config.verify)
        report["plot"] = plot
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(
        f"{len(pairs)} pairs, {'verifier' if config.verify else 'bare cosine'} threshold "
        f"{report['threshold']:.4g}, min cosine {config.min_cosine}"
    )
    for name, r in results.items():
        d = r.to_dict()
        op = d["at_threshold"]
        click.echo(
            f"  {name:9s} precision {op['precision']}  recall {op['recall']}  "
            f"false hits/1k {op['false_hits_per_1k']}  served {op['served']}/{d['lookups']}  "
            f"{d['lookups_per_s']} lookups/s"
        )
        best = d["best_precision_at_recall_50"]
        if best:
            click.echo(
                f"  {'':9s} best precision at recall >= 0.5: {best['precision']} "
                f"(threshold {best['threshold']:.4g})"
            )
    if plot:
        click.echo(f"  curve written to {plot}")
