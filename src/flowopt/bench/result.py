"""The outcome of a benchmark run, as one JSON-ready object."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowopt.bench.stats import LevelStats, breaking_point, find_knee

__all__ = ["BenchResult", "VariantResult"]

# Client health thresholds: above these, the client may be distorting the timings.
_LAG_WARN_MS = 5.0
_CPU_WARN = 0.8


@dataclass(slots=True)
class VariantResult:
    """One configuration's levels (the target itself, or an ablation variant)."""

    name: str
    levels: list[LevelStats]
    windows: list[LevelStats] = field(default_factory=list)

    @property
    def knee(self) -> float | None:
        if len(self.levels) < 3:
            return None
        return find_knee([lv.load for lv in self.levels], [lv.output_tok_s for lv in self.levels])

    @property
    def breaking(self) -> tuple[float | None, str | None]:
        return breaking_point(self.levels)

    def to_dict(self) -> dict[str, Any]:
        load, why = self.breaking
        return {
            "name": self.name,
            "knee": self.knee,
            "breaking_point": {"load": load, "reason": why},
            "levels": [lv.to_dict() for lv in self.levels],
            "windows": [w.to_dict() for w in self.windows],
        }


@dataclass(slots=True)
class BenchResult:
    """Everything one ``flowopt bench`` run measured."""

    target: str
    shape: str
    workload: dict[str, Any]
    settings: dict[str, Any]
    variants: list[VariantResult]
    started_at: str
    duration_s: float

    @property
    def main(self) -> VariantResult:
        return self.variants[0]

    def client_overhead(self) -> dict[str, Any]:
        """How much the client itself cost, and whether it may have skewed the result."""
        levels = [lv for v in self.variants for lv in v.levels]
        lag = max((lv.loop_lag_ms.get("p99") or 0.0 for lv in levels), default=0.0)
        cpu = max((lv.client_cpu_share or 0.0 for lv in levels), default=0.0)
        per_req = max((lv.client_ms_per_request for lv in levels), default=0.0)
        warn = None
        if lag > _LAG_WARN_MS or cpu > _CPU_WARN:
            warn = (
                f"the client's event loop ran late (p99 {lag:.1f} ms; client CPU "
                f"{cpu:.0%} of a core): timings may include that much client-side delay. "
                + (
                    "The client is the bottleneck: lower the load or run it elsewhere."
                    if cpu > _CPU_WARN
                    else "The client is mostly idle, so the machine is busy (a target on the "
                    "same host competes with the client for CPU)."
                )
            )
        return {
            "parse_ms_per_request_max": round(per_req, 4),
            "loop_lag_p99_ms_max": round(lag, 3),
            "cpu_share_max": round(cpu, 4),
            "warning": warn,
        }

    def ratios(self) -> list[dict[str, Any]]:
        """Ablation ratios: each variant vs the full configuration, level by level."""
        base = self.main.levels
        out = []
        for v in self.variants[1:]:
            for a, b in zip(base, v.levels, strict=False):

                def r(x: float | None, y: float | None) -> float | None:
                    return None if not x or y is None else round(y / x, 4)

                out.append(
                    {
                        "variant": v.name,
                        "load": a.load,
                        "tok_s_ratio": r(a.output_tok_s, b.output_tok_s),
                        "req_s_ratio": r(a.req_s, b.req_s),
                        "ttft_p50_ratio": r(a.ttft_ms["p50"], b.ttft_ms["p50"]),
                        "e2e_p50_ratio": r(a.e2e_ms["p50"], b.e2e_ms["p50"]),
                        "e2e_p95_ratio": r(a.e2e_ms["p95"], b.e2e_ms["p95"]),
                    }
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "shape": self.shape,
            "workload": self.workload,
            "settings": self.settings,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "client_overhead": self.client_overhead(),
            "variants": [v.to_dict() for v in self.variants],
            "ratios": self.ratios(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        """Rebuild a result from its JSON (to re-render a report without re-running)."""

        def level(raw: dict[str, Any]) -> LevelStats:
            return LevelStats(**{k: v for k, v in raw.items() if k != "success_rate"})

        variants = [
            VariantResult(
                v["name"], [level(x) for x in v["levels"]], [level(x) for x in v.get("windows", [])]
            )
            for v in data["variants"]
        ]
        return cls(
            data["target"],
            data["shape"],
            data["workload"],
            data["settings"],
            variants,
            data["started_at"],
            float(data["duration_s"]),
        )

    @classmethod
    def read_json(cls, path: str | Path) -> BenchResult:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
