"""Tiny SVG line charts for the offline HTML report (no JavaScript, no CDN, no deps).

Why hand-rolled: the report must open from a file on an air-gapped machine and stay a
single document; a plotting library would add a heavy dependency for four charts.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

__all__ = ["COLORS", "line_chart"]

COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#db2777")
W, H, L, R, T, B = 640, 320, 64, 150, 24, 44


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(n + 2) if start + i * step <= hi + step * 0.01]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:.3g}"


def line_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[float], Sequence[float | None]]],
    *,
    xlabel: str,
    ylabel: str,
    marks: Sequence[tuple[float, str, str]] = (),
    logx: bool = False,
) -> str:
    """An SVG chart of ``(name, xs, ys)`` series; ``marks`` are vertical (x, label, color)."""
    pts = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys, strict=False) if y is not None]
    if not pts:
        return f"<p><em>{html.escape(title)}: no data</em></p>"
    fx = (lambda v: math.log10(v)) if logx and all(x > 0 for x, _ in pts) else (lambda v: v)
    xs_all = [fx(x) for x, _ in pts]
    x0, x1 = min(xs_all), max(xs_all)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y1 = max(y for _, y in pts) * 1.08 or 1.0
    yt = _ticks(0, y1)
    y1 = max(y1, yt[-1])

    def px(x: float) -> float:
        return L + (fx(x) - x0) / (x1 - x0) * (W - L - R)

    def py(y: float) -> float:
        return H - B - y / y1 * (H - T - B)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
        f'height="{H}" font-family="sans-serif" font-size="11">',
        f'<text x="{W / 2 - R / 2}" y="15" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{html.escape(title)}</text>',
    ]
    for t in yt:
        y = py(t)
        out.append(f'<line x1="{L}" x2="{W - R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    xticks = sorted({x for x, _ in pts})
    if len(xticks) > 12:  # a distribution, not a sweep: round ticks, not data points
        lo = min(xticks)
        xticks = [t for t in _ticks(lo, max(xticks), 6) if t >= lo]
    for t in xticks:
        x = px(t)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{H - B}" y2="{H - B + 4}" stroke="#374151"/>'
        )
        out.append(f'<text x="{x:.1f}" y="{H - B + 16}" text-anchor="middle">{_fmt(t)}</text>')
    out.append(f'<line x1="{L}" x2="{W - R}" y1="{H - B}" y2="{H - B}" stroke="#374151"/>')
    out.append(f'<line x1="{L}" x2="{L}" y1="{T}" y2="{H - B}" stroke="#374151"/>')
    out.append(
        f'<text x="{(L + W - R) / 2}" y="{H - 6}" text-anchor="middle">{html.escape(xlabel)}</text>'
    )
    out.append(
        f'<text transform="translate(14,{(T + H - B) / 2}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(ylabel)}</text>'
    )
    for x, label, color in marks:
        if x0 <= fx(x) <= x1:
            xx = px(x)
            out.append(
                f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{T}" y2="{H - B}" '
                f'stroke="{color}" stroke-dasharray="5,4"/>'
            )
            out.append(
                f'<text x="{xx + 4:.1f}" y="{T + 12}" fill="{color}">{html.escape(label)}</text>'
            )
    for i, (name, xs, ys) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        p = [(px(x), py(y)) for x, y in zip(xs, ys, strict=False) if y is not None]
        if not p:
            continue
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in p)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        if len(p) < 40:
            out.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>' for a, b in p)
        ly = T + 14 + i * 16
        out.append(
            f'<line x1="{W - R + 10}" x2="{W - R + 28}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        out.append(f'<text x="{W - R + 32}" y="{ly}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)
