"""Human-readable rendering of a run: answer, per-request summary, span tree."""

from __future__ import annotations

from typing import Any

import click

from flowopt.result import Result

__all__ = ["echo_span_tree", "echo_summary"]


def _fmt_detail(detail: dict[str, Any]) -> str:
    parts = []
    for k, v in detail.items():
        if k in ("middleware", "action"):
            continue
        if isinstance(v, float):
            v = f"{v:.3g}"
        parts.append(f"{k}={v}")
    return (" " + " ".join(parts)) if parts else ""


def _ms(value: float) -> str:
    """Milliseconds with enough digits that a sub-millisecond cache hit is not "0ms"."""
    if value >= 10:
        return f"{value:.0f}ms"
    if value >= 1:
        return f"{value:.1f}ms"
    return f"{value:.2f}ms"


def echo_summary(result: Result) -> None:
    """One line per LLM hop: step, model, tokens, latency, and each middleware decision."""
    click.secho("requests:", bold=True)
    for hop in result.hops:
        r = hop.response
        latency = _ms(r.latency_ms) if r.latency_ms is not None else "n/a"
        ttft = f" ttft={_ms(r.ttft_ms)}" if r.ttft_ms is not None else ""
        cost = f" cost={r.cost:.6f}" if r.cost is not None else ""
        click.echo(
            f"  {hop.step:<12} model={r.model} in={r.usage.input_tokens} "
            f"out={r.usage.output_tokens} latency={latency}{ttft}{cost} "
            f"finish={r.finish_reason}{' (cached)' if r.cached else ''}"
        )
        for d in r.decisions:
            click.echo(f"      {d.middleware}: {d.action}{_fmt_detail(d.to_dict())}")
    u = result.usage
    click.echo(
        f"  total: {len(result.hops)} LLM calls, {u.input_tokens} in / {u.output_tokens} out "
        f"tokens, {result.latency_ms:.0f} ms"
    )
    for s in result.speculation:  # what wrong guesses burnt, beside the committed total
        w, price = s.wasted, s.wasted_cost
        click.echo(
            f"  speculation {s.edge}: {s.outcome}, wasted {w.input_tokens} in / "
            f"{w.output_tokens} out tokens{'' if price is None else f' cost={price:.6f}'}"
            f"{' (estimated)' if s.estimated else ''}"
        )


def echo_span_tree(tree: dict[str, Any], durations: dict[str, float] | None = None) -> None:
    click.secho("trace:", bold=True)

    def walk(nodes: list[dict[str, Any]], prefix: str) -> None:
        for i, n in enumerate(nodes):
            last = i == len(nodes) - 1
            dur = f"  {n['ms']:.1f} ms" if "ms" in n else ""
            click.echo(f"{prefix}{'└── ' if last else '├── '}{n['name']}{dur}")
            walk(n["children"], prefix + ("    " if last else "│   "))

    walk(tree.get("roots", []), "  ")
