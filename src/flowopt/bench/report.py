"""Human-readable output of a run: the terminal summary and the offline HTML report."""

from __future__ import annotations

import html
from pathlib import Path

from flowopt.bench.result import BenchResult, VariantResult
from flowopt.bench.stats import LevelStats
from flowopt.bench.svg import line_chart

__all__ = ["render_html", "terminal_summary", "write_html"]


def _v(x: float | None, fmt: str = ".0f") -> str:
    return "-" if x is None else format(x, fmt)


def _load_name(lv: LevelStats) -> str:
    return {"concurrency": "concurrent", "rate": "req/s offered", "time": "s"}.get(lv.load_kind, "")


def _headline(res: BenchResult, v: VariantResult) -> list[str]:
    lines = []
    if res.shape == "users":
        lv = v.levels[0]
        s = res.settings
        lines.append(
            f"Users: {s['users']}  Requests per user: {s['requests']}  "
            f"Total: {lv.total}  Successful: {lv.succeeded}  "
            f"Failed: {lv.total - lv.succeeded}"
        )
    else:
        total = sum(lv.total for lv in v.levels)
        ok = sum(lv.succeeded for lv in v.levels)
        lines.append(
            f"Levels: {len(v.levels)}  Total: {total}  Successful: {ok}  Failed: {total - ok}"
        )
    best = max(v.levels, key=lambda lv: lv.output_tok_s)
    knee = v.knee
    unit = _load_name(v.levels[0])
    knee_s = (
        f"~{knee:g} {unit}"
        if knee is not None
        else ("none found" if len(v.levels) >= 3 else "n/a (needs a sweep)")
    )
    load, why = v.breaking
    lines.append(
        f"TTFT p50/p95: {_v(best.ttft_ms['p50'])}/{_v(best.ttft_ms['p95'])} ms   "
        f"Tokens/s overall: {best.output_tok_s:.1f}   Knee: {knee_s}"
    )
    lines.append(
        "Breaking point: " + (f"{load:g} {unit} ({why})" if load is not None else "not reached")
    )
    return lines


def _table(levels: list[LevelStats]) -> list[str]:
    head = (
        f"{'level':<16}{'ok/total':>10}{'req/s':>8}{'tok/s':>8}{'TTFT p50/95/99 ms':>22}"
        f"{'E2E p50/95/99 ms':>24}{'TPOT':>7}{'ITL':>7}{'good/s':>8}"
    )
    rows = [head, "-" * len(head)]
    for lv in levels:
        ttft = "/".join(_v(lv.ttft_ms[q]) for q in ("p50", "p95", "p99"))
        e2e = "/".join(_v(lv.e2e_ms[q]) for q in ("p50", "p95", "p99"))
        count = f"{lv.succeeded}/{lv.total}"
        rows.append(
            f"{lv.label:<16}{count:>10}{lv.req_s:>8.2f}{lv.output_tok_s:>8.1f}"
            f"{ttft:>22}{e2e:>24}"
            f"{_v(lv.tpot_ms['p50'], '.1f'):>7}{_v(lv.itl_ms['p50'], '.1f'):>7}"
            f"{_v(lv.goodput_req_s, '.2f'):>8}"
        )
        if lv.errors:
            rows.append("    errors: " + ", ".join(f"{k}={n}" for k, n in lv.errors.items()))
    return rows


def terminal_summary(res: BenchResult) -> str:
    """The summary printed at the end of a run."""
    w = res.workload
    out = [
        f"Target: {res.target}   Workload: {w.get('name')} ({w.get('prompts')} prompts, "
        f"zipf {w.get('zipf_s')})   max_tokens: {res.settings.get('max_tokens')}"
    ]
    out += _headline(res, res.main)
    out += ["", *_table(res.main.levels)]
    if res.main.windows:
        out += ["", "Soak windows (drift):", *_table(res.main.windows)]
    if len(res.variants) > 1:
        out += [
            "",
            "Ablation (variant / full):",
            f"{'variant':<24}{'load':>6}{'tok/s':>8}{'TTFT p50':>10}{'E2E p50':>9}",
        ]
        for r in res.ratios():
            out.append(
                f"{r['variant']:<24}{r['load']:>6g}{_v(r['tok_s_ratio'], '.2f'):>8}"
                f"{_v(r['ttft_p50_ratio'], '.2f'):>10}{_v(r['e2e_p50_ratio'], '.2f'):>9}"
            )
    co = res.client_overhead()
    out += [
        "",
        f"Client overhead: parse {co['parse_ms_per_request_max']:.3f} ms/request, "
        f"loop lag p99 {co['loop_lag_p99_ms_max']:.2f} ms, "
        f"CPU {co['cpu_share_max']:.0%} of a core",
    ]
    if co["warning"]:
        out.append("WARNING: " + co["warning"])
    return "\n".join(out)


def _charts(res: BenchResult) -> list[str]:
    v = res.main
    lv0 = v.levels[0]
    xs = [lv.load for lv in v.levels]
    xlabel = {
        "concurrency": "concurrent requests",
        "rate": "offered load (req/s)",
        "time": "time (s)",
    }.get(lv0.load_kind, "load")
    marks = []
    if v.knee is not None:
        marks.append((v.knee, f"knee ~{v.knee:g}", "#16a34a"))
    if v.breaking[0] is not None:
        marks.append((v.breaking[0], "breaking", "#dc2626"))
    logx = lv0.load_kind != "time" and len(xs) > 2 and max(xs) / max(min(xs), 1e-9) >= 8
    charts = []
    tp = [
        (
            f"{var.name} tok/s",
            [lv.load for lv in var.levels],
            [lv.output_tok_s for lv in var.levels],
        )
        for var in res.variants
    ]
    charts.append(
        line_chart(
            "Output throughput vs load",
            tp,
            xlabel=xlabel,
            ylabel="output tokens/s",
            marks=marks,
            logx=logx,
        )
    )
    rq: list[tuple[str, list[float], list[float | None]]] = [
        ("req/s", xs, [lv.req_s for lv in v.levels])
    ]
    if any(lv.goodput_req_s is not None for lv in v.levels):
        rq.append(("goodput req/s", xs, [lv.goodput_req_s for lv in v.levels]))
    charts.append(
        line_chart(
            "Requests/s vs load", rq, xlabel=xlabel, ylabel="requests/s", marks=marks, logx=logx
        )
    )
    for metric, title in (("ttft_ms", "Time to first token"), ("e2e_ms", "End-to-end latency")):
        series = [
            (q, xs, [getattr(lv, metric)[q] for lv in v.levels]) for q in ("p50", "p95", "p99")
        ]
        charts.append(
            line_chart(
                f"{title} percentiles vs load",
                series,
                xlabel=xlabel,
                ylabel="ms",
                marks=marks,
                logx=logx,
            )
        )
    cdf = []
    for lv in v.levels[:8]:
        ts = sorted(lv.ttft_samples_ms)
        if ts:
            n = len(ts)
            cdf.append((lv.label, ts, [100.0 * (i + 1) / n for i in range(n)]))
    if cdf:
        charts.append(
            line_chart(
                "TTFT distribution (CDF) per level", cdf, xlabel="TTFT (ms)", ylabel="% of requests"
            )
        )
    return charts


def render_html(res: BenchResult) -> str:
    """A single self-contained HTML document (inline SVG and CSS; opens offline)."""
    summary = html.escape(terminal_summary(res))
    charts = "\n".join(f'<div class="chart">{c}</div>' for c in _charts(res))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>flowopt bench: {html.escape(res.target)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #111827; }}
h1 {{ font-size: 20px; }} .meta {{ color: #4b5563; }}
pre {{ background: #f3f4f6; padding: 12px; overflow-x: auto; font-size: 12px; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.chart {{ border: 1px solid #e5e7eb; padding: 6px; }}
</style></head><body>
<h1>flowopt bench — {html.escape(res.shape)} on {html.escape(res.target)}</h1>
<p class="meta">started {html.escape(res.started_at)}, {res.duration_s:.1f} s;
settings: {html.escape(str(res.settings))}</p>
<div class="charts">{charts}</div>
<h2>Summary</h2><pre>{summary}</pre>
<p class="meta">Definitions: TTFT = request sent to first content token; E2E = sent to last
byte; TPOT = (E2E - TTFT) / (output tokens - 1); ITL = gap between consecutive chunks;
goodput = successful requests/s meeting every SLO. Knee: Kneedle on throughput vs load.
Breaking point: first level with success &lt; 99%, throughput &lt; 80% of the best so far,
or SLO attainment &lt; 50%.</p>
</body></html>
"""


def write_html(res: BenchResult, path: str | Path) -> None:
    Path(path).write_text(render_html(res), encoding="utf-8")
