"""``flowopt memory``: read, forget and measure long-term memory.

::

    flowopt memory list   --tenant T --user U [--data-dir DIR] [--json]
    flowopt memory search --tenant T --user U QUERY [--k K] [--data-dir DIR] [--json]
    flowopt memory forget --tenant T --user U [--data-dir DIR] [--yes]
    flowopt memory eval FILE [--k K] [--json] [--base-url URL] [--model M]

``list``/``search`` show each memory with its provenance (source turn ids, time, scope).
``forget`` removes the user's memories from the vector store and from Mem0's history.
``eval`` runs :mod:`flowopt.memory.evaluation` (the middleware's own code path).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

__all__ = ["command"]


def _key_options(f: Any) -> Any:
    f = click.option("--data-dir", default=None, help="memory data dir (default: the pipeline's)")(
        f
    )
    f = click.option(
        "--postgres-url",
        default=None,
        envvar="FLOWOPT_MEMORY_POSTGRES_URL",
        help="the pipeline's memory postgres_url, when its vectors live in pgvector",
    )(f)
    f = click.option("--user", required=True, help="user id")(f)
    f = click.option("--tenant", required=True, help="tenant id")(f)
    return f


def _store(data_dir: str | None, postgres_url: str | None = None) -> Any:
    from flowopt.memory import LongTermStore, default_data_dir

    return LongTermStore(
        data_dir or default_data_dir(),
        llm_base_url=None,
        llm_model=None,
        postgres_url=postgres_url,
    )


def _show(items: list[Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([m.to_dict() for m in items], indent=2))
        return
    if not items:
        click.echo("(no memories)")
    for m in items:
        score = "" if m.score is None else f" [{m.score:.3f}]"
        click.echo(f"{m.id}{score} {m.text}")
        click.echo(
            f"    sources={','.join(m.sources) or '-'} at={m.at or '-'} scope={m.scope or '-'}"
        )


@click.group(name="memory")
def command() -> None:
    """Long-term memory: list, search, forget, eval."""


@command.command(name="list")
@_key_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def list_(
    tenant: str, user: str, data_dir: str | None, postgres_url: str | None, as_json: bool
) -> None:
    """A user's memories with their provenance."""
    from flowopt.memory import MemoryKey

    store = _store(data_dir, postgres_url)
    try:
        _show(store.memories(MemoryKey(tenant, user=user)), as_json)
    finally:
        store.close()


@command.command()
@_key_options
@click.argument("query")
@click.option("--k", default=10, show_default=True, help="how many")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def search(
    tenant: str,
    user: str,
    data_dir: str | None,
    postgres_url: str | None,
    query: str,
    k: int,
    as_json: bool,
) -> None:
    """A user's memories closest to QUERY."""
    from flowopt.memory import MemoryKey

    store = _store(data_dir, postgres_url)
    try:
        _show(store.search(MemoryKey(tenant, user=user), query, top_k=k), as_json)
    finally:
        store.close()


@command.command()
@_key_options
@click.option("--yes", is_flag=True, help="do not ask")
def forget(
    tenant: str, user: str, data_dir: str | None, postgres_url: str | None, yes: bool
) -> None:
    """Remove a user's memories from the vector store and the history."""
    from flowopt.memory import MemoryKey

    if not yes:
        click.confirm(f"forget every memory of user {user!r} in tenant {tenant!r}?", abort=True)
    store = _store(data_dir, postgres_url)
    try:
        n = store.forget(MemoryKey(tenant, user=user))
        left = len(store.memories(MemoryKey(tenant, user=user)))
        rows = store.history_rows(MemoryKey(tenant, user=user))
    finally:
        store.close()
    click.echo(f"forgot {n} memories; {left} left in the vector store, {rows} history rows left")


@command.command(name="eval")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--k", default=10, show_default=True, help="memories recalled per question")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option(
    "--base-url",
    default="http://127.0.0.1:8001",
    show_default=True,
    help="OpenAI-compatible server that extracts",
)
@click.option("--model", default="qwen0.5b", show_default=True, help="model name on it")
@click.option(
    "--extractor",
    type=click.Choice(["compact", "mem0", "none"]),
    default="compact",
    show_default=True,
    help="flowopt's compact prompt, Mem0's own, or none (no LLM: use with --episodic)",
)
@click.option(
    "--episodic/--no-episodic",
    default=True,
    show_default=True,
    help="also keep every turn verbatim as an episode (the middleware's `episodic: true`)",
)
@click.option("--data-dir", default=None, help="keep the store here (default: a temp dir)")
@click.option(
    "--answers",
    is_flag=True,
    help="also answer each question (memory vs full history) and judge it",
)
def eval_(
    file: str,
    k: int,
    as_json: bool,
    base_url: str,
    model: str,
    extractor: str,
    data_dir: str | None,
    answers: bool,
    episodic: bool,
) -> None:
    """Evidence recall@K and recall latency on FILE (see docs/memory.md for the format)."""
    from flowopt.memory.evaluation import evaluate, load_conversations

    convs = load_conversations(file)
    report = asyncio.run(
        evaluate(
            convs,
            k=k,
            llm_base_url=base_url,
            llm_model=model,
            extractor=extractor,
            data_dir=data_dir,
            answers=answers,
            episodic=episodic,
        )
    )
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{report['questions']} questions, {report['conversations']} conversations, k={k}")
    click.echo(
        f"evidence recall@{k}: {report['evidence_recall_at_k']:.3f} "
        f"(raw-turn retrieval baseline {report['baseline_raw_turns_recall_at_k']:.3f})"
    )
    for kk, v in report["evidence_recall_at"].items():
        base = report["baseline_raw_turns_recall_at"][kk]
        click.echo(f"  recall@{kk}: {v:.3f} (raw turns {base:.3f})")
    click.echo(
        f"recall latency p50 {report['recall_latency_p50_ms']:.1f} ms, "
        f"p95 {report['recall_latency_p95_ms']:.1f} ms"
    )
    for cond, acc in report.get("answers", {}).items():
        click.echo(
            f"answers with {cond}: judge {acc['judge_accuracy']:.3f}, lexical "
            f"{acc['lexical_accuracy']:.3f}, prompt tokens {acc['prompt_tokens_mean']:.0f}"
        )
    click.echo(
        f"memories stored {report['memories_stored']} from {report['turns_fed']} turns; "
        f"extraction {report['extraction_turns_per_s']:.2f} turns/s"
    )
