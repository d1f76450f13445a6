"""Per-level statistics, the saturation knee and the breaking point.

Definitions (what the report's numbers mean):

- **TTFT**: request sent -> first content token received. **E2E**: sent -> last byte.
  **TPOT**: (E2E - TTFT) / (output tokens - 1), per request. **ITL**: the gap between
  consecutive content chunks, over all chunks of all requests.
- **Output tokens/s**: output tokens of successful requests / the level's wall time;
  per request: output tokens / E2E. **Requests/s**: successful requests / wall time.
- **Goodput**: successful requests/s that also met every SLO the user set (TTFT, E2E,
  TPOT bounds), after DistServe's definition; ``slo_attainment`` is the fraction.
- **Knee**: the load where more load stops buying throughput. Kneedle (Satopaa et al.,
  2011) on the normalised throughput-vs-load curve (load on a log scale for geometric
  sweeps): the point furthest above the straight line from the first to the peak point.
  With no bulge, the peak is the knee when higher loads were tried and bought nothing.
  A curve still rising in proportion has no knee.
- **Breaking point**: the first load level where the service fails its users: success
  rate below ``min_success`` (99%), or throughput fallen below ``collapse`` (80%) of the
  best seen at lower load, or (with SLOs) attainment below 50%.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flowopt.bench.targets import Sample

__all__ = ["SLO", "LevelStats", "breaking_point", "find_knee", "percentile", "summarize"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass(frozen=True, slots=True)
class SLO:
    """Service-level objectives in milliseconds; None: not constrained."""

    ttft_ms: float | None = None
    e2e_ms: float | None = None
    tpot_ms: float | None = None

    @property
    def set(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.e2e_ms, self.tpot_ms))

    def met(self, s: Sample) -> bool:
        if not s.ok:
            return False
        if self.ttft_ms is not None and (s.ttft is None or s.ttft * 1000 > self.ttft_ms):
            return False
        if self.e2e_ms is not None and s.e2e * 1000 > self.e2e_ms:
            return False
        tpot = s.tpot
        return not (self.tpot_ms is not None and tpot is not None and tpot * 1000 > self.tpot_ms)


def _pcts(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for q in (50, 95, 99):
        v = percentile(values, q)
        out[f"p{q}"] = None if v is None else round(v * scale, 3)
    out["mean"] = None if not values else round(sum(values) / len(values) * scale, 3)
    return out


@dataclass(slots=True)
class LevelStats:
    """Everything reported for one load level."""

    label: str
    load: float
    load_kind: str
    wall_s: float
    total: int
    succeeded: int
    errors: dict[str, int]
    ttft_ms: dict[str, float | None]
    e2e_ms: dict[str, float | None]
    tpot_ms: dict[str, float | None]
    itl_ms: dict[str, float | None]
    output_tokens: int
    output_tok_s: float
    per_request_tok_s: dict[str, float | None]
    req_s: float
    goodput_req_s: float | None
    slo_attainment: float | None
    client_ms_per_request: float
    loop_lag_ms: dict[str, float | None] = field(default_factory=dict)
    client_cpu_share: float | None = None
    ttft_samples_ms: list[float] = field(default_factory=list)
    cached: int = 0

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["success_rate"] = round(self.success_rate, 4)
        return out


def summarize(
    label: str, load: float, load_kind: str, samples: Sequence[Sample], wall_s: float, slo: SLO
) -> LevelStats:
    ok = [s for s in samples if s.ok]
    errors = Counter(s.error or "unknown" for s in samples if not s.ok)
    ttfts = [s.ttft for s in ok if s.ttft is not None]
    tpots = [t for s in ok if (t := s.tpot) is not None]
    itls = [g for s in ok for g in s.itl]
    tokens = sum(s.output_tokens for s in ok)
    wall = max(wall_s, 1e-9)
    good = [s for s in ok if slo.met(s)] if slo.set else None
    return LevelStats(
        label=label,
        load=load,
        load_kind=load_kind,
        wall_s=round(wall_s, 3),
        total=len(samples),
        succeeded=len(ok),
        errors=dict(errors),
        ttft_ms=_pcts(ttfts),
        e2e_ms=_pcts([s.e2e for s in ok]),
        tpot_ms=_pcts(tpots),
        itl_ms=_pcts(itls),
        output_tokens=tokens,
        output_tok_s=round(tokens / wall, 3),
        per_request_tok_s=_pcts([s.output_tokens / s.e2e for s in ok if s.e2e > 0], 1.0),
        req_s=round(len(ok) / wall, 4),
        goodput_req_s=None if good is None else round(len(good) / wall, 4),
        slo_attainment=None if good is None or not samples else round(len(good) / len(samples), 4),
        client_ms_per_request=round(sum(s.client_ms for s in samples) / max(len(samples), 1), 4),
        ttft_samples_ms=[round(t * 1000, 3) for t in ttfts],
        cached=sum(1 for s in ok if s.cached),
    )


def find_knee(loads: Sequence[float], values: Sequence[float]) -> float | None:
    """Kneedle on an increasing, saturating curve; None without a clear knee.

    Only the part up to the peak counts (after it the curve falls: that is the breaking
    point's business). The knee is where the normalised curve rises furthest above the
    chord from the first point to the peak; a bulge under 5% of the range is no knee.
    """
    if len(loads) < 3:
        return None
    pts = sorted(zip(loads, values, strict=True))
    peak = max(range(len(pts)), key=lambda i: pts[i][1])
    # Load beyond the peak bought nothing: if there is any, the peak is at most the knee.
    plateau = pts[peak][0] if peak < len(pts) - 1 and peak > 0 else None
    pts = pts[: peak + 1]
    if len(pts) < 3:
        return plateau
    # Sweeps are usually geometric (1, 2, 4, 8...): on such a sweep the load axis is read
    # on a log scale, as the eye reads the chart, or every knee lands on the last points.
    geometric = pts[0][0] > 0 and pts[-1][0] / pts[0][0] >= 4
    scale = (lambda v: math.log(v)) if geometric else (lambda v: v)
    x0, y0 = scale(pts[0][0]), pts[0][1]
    x1, y1 = scale(pts[-1][0]), pts[-1][1]
    if x1 == x0 or y1 == y0:
        return None
    best, best_gap = None, 0.05
    for x, y in pts[1:-1]:
        gap = (y - y0) / (y1 - y0) - (scale(x) - x0) / (x1 - x0)
        if gap > best_gap:
            best, best_gap = x, gap
    if best is None:
        # No bulge before the peak: saturated only if the last step bought < 10% more,
        # else the peak itself when more load was tried and bought nothing.
        (xa, ya), (_, yb) = pts[-2], pts[-1]
        if ya > 0 and (yb - ya) / ya < 0.10:
            return xa
        return plateau
    return best


def breaking_point(
    levels: Sequence[LevelStats], *, min_success: float = 0.99, collapse: float = 0.80
) -> tuple[float | None, str | None]:
    """The first failing load level and why, or (None, None)."""
    best = 0.0
    for lv in sorted(levels, key=lambda lv: lv.load):
        if lv.total and lv.success_rate < min_success:
            return lv.load, f"success rate {lv.success_rate:.1%} < {min_success:.0%}"
        if best > 0 and lv.output_tok_s < collapse * best:
            return lv.load, (
                f"throughput fell to {lv.output_tok_s:.1f} tok/s, "
                f"< {collapse:.0%} of the best {best:.1f}"
            )
        if lv.slo_attainment is not None and lv.slo_attainment < 0.5:
            return lv.load, f"SLO attainment {lv.slo_attainment:.1%} < 50%"
        best = max(best, lv.output_tok_s)
    return None, None
