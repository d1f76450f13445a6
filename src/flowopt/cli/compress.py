"""``flowopt compress``: measure prompt compression on a dev file.

::

    flowopt compress eval --data FILE.jsonl[.gz] [--ratio R ...] [--limit N]
                          [--model NAME --base-url URL] [--scorer DIR] [--json]

``eval`` runs every prompt through the ``compress`` middleware's own code path
(:mod:`flowopt.compress.evaluate`); with ``--model`` it also asks the model the full and the
compressed prompt (greedy) and reports QA accuracy for both.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

__all__ = ["command"]


@click.group(name="compress")
def command() -> None:
    """Prompt compression (LLMLingua): measure what it keeps."""


@command.command(name="eval")
@click.option("--data", "data", required=True, help="NQ-20 or KV-75 format .jsonl[.gz]")
@click.option("--ratio", "ratios", type=float, multiple=True, help="target ratio (repeatable)")
@click.option("--limit", type=int, default=None, help="first N rows only")
@click.option("--model", default=None, help="served model to answer with (QA accuracy)")
@click.option("--base-url", default="http://127.0.0.1:8000", show_default=True)
@click.option("--scorer", default=None, help="scorer checkpoint dir (default: SmolLM2)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def eval_command(
    data: str,
    ratios: tuple[float, ...],
    limit: int | None,
    model: str | None,
    base_url: str,
    scorer: str | None,
    as_json: bool,
) -> None:
    """Answer survival, achieved ratio, compressor latency (and QA accuracy) per ratio."""
    from flowopt.compress.evaluate import load_rows
    from flowopt.compress.scorer import LLMLinguaScorer

    rows = load_rows(data, limit)
    result = asyncio.run(
        _run(rows, list(ratios or (3.0,)), LLMLinguaScorer(scorer), model, base_url)
    )
    result["data"] = data
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['n']} prompts from {data}")
    if "qa_accuracy_full" in result:
        click.echo(f"QA accuracy, full prompt: {result['qa_accuracy_full']:.3f}")
    for r in result["ratios"]:
        line = (
            f"target {r['target_ratio']:g}x: achieved {r['achieved_ratio']:.2f}x, "
            f"answer survival {r['answer_survival']:.3f}, declined {r['declined']}, "
            f"compressor {r['compress_ms_p50']:.0f} ms (p50)"
        )
        if "qa_accuracy_compressed" in r:
            line += f", QA accuracy {r['qa_accuracy_compressed']:.3f}"
        click.echo(line)
        if "survival_by_gold_position" in r:
            click.echo(f"  survival by gold position: {r['survival_by_gold_position']}")


async def _run(
    rows: list[dict[str, Any]], ratios: list[float], scorer: Any, model: str | None, url: str
) -> dict[str, Any]:
    from flowopt.compress.evaluate import evaluate

    if model is None:
        return await evaluate(rows, ratios, scorer=scorer)
    from flowopt.backends.vllm import VLLMBackend

    backend = VLLMBackend(url, model=model)
    try:
        return await evaluate(rows, ratios, scorer=scorer, answer=backend.generate)
    finally:
        await backend.aclose()
