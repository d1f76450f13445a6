"""Offline evaluation of a router on a labelled set (no model is called).

For each prompt the router gives a score; at threshold ``t`` prompts with score >= t go to
the strong tier. Quality is the picked model's recorded score; cost is the share of strong
calls (or priced with a per-call price ratio). Reported against always-strong, always-weak
and a random router with the same strong share, as RouteLLM reports: the strong share
needed to reach 90/95% of strong quality, and APGR (average performance gap recovered
over the strong-share axis, random = 0.5).

Splits are by a hash of ``item_id`` so ``train`` and ``eval`` agree on the hold-out
without storing it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from flowopt.errors import ConfigError

__all__ = ["Example", "curve", "in_holdout", "load_examples", "split", "summarize"]


@dataclass(frozen=True, slots=True)
class Example:
    item_id: str
    prompt: str
    weak: float
    strong: float
    benchmark: str


def load_examples(path: str | Path) -> list[Example]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"labelled file {p} does not exist", hint="pass a JSONL file")
    out: list[Example] = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.append(
                    Example(
                        str(row.get("item_id", n)),
                        str(row["prompt"]),
                        float(row["weak_score"]),
                        float(row["strong_score"]),
                        str(row.get("benchmark", "")),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{p}:{n}: not a labelled example ({exc})",
                    hint="each line needs prompt, weak_score, strong_score (0/1)",
                ) from None
    if not out:
        raise ConfigError(f"{p} holds no examples", hint="one JSON object per line")
    return out


def in_holdout(item_id: str, holdout: float, seed: int) -> bool:
    h = hashlib.blake2b(f"{seed}:{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < holdout


def split(
    examples: Sequence[Example], holdout: float, seed: int
) -> tuple[list[Example], list[Example]]:
    train = [e for e in examples if not in_holdout(e.item_id, holdout, seed)]
    test = [e for e in examples if in_holdout(e.item_id, holdout, seed)]
    return train, test


def curve(
    scores: npt.NDArray[Any], weak: npt.NDArray[Any], strong: npt.NDArray[Any], points: int = 101
) -> list[dict[str, float]]:
    """Quality at every strong share from 0 to 1 (routing the highest scores to strong)."""
    order = np.argsort(-scores, kind="stable")
    n = len(scores)
    out = []
    for i in range(points):
        m = round(n * i / (points - 1))
        to_strong = np.zeros(n, dtype=bool)
        to_strong[order[:m]] = True
        q = float(np.where(to_strong, strong, weak).mean())
        out.append(
            {
                "strong_share": m / n,
                "quality": q,
                "threshold": float(scores[order[m - 1]]) if m else float("inf"),
            }
        )
    return out


def _share_for(c: list[dict[str, float]], target: float) -> float:
    for p in c:
        if p["quality"] >= target:
            return p["strong_share"]
    return 1.0


def summarize(
    scores: npt.NDArray[Any],
    weak: npt.NDArray[Any],
    strong: npt.NDArray[Any],
    *,
    price_ratio: float = 0.05,
) -> dict[str, Any]:
    """Headline figures; ``price_ratio`` = cost of a weak call / a strong call."""
    c = curve(scores, weak, strong)
    q_w, q_s = float(weak.mean()), float(strong.mean())
    gap = q_s - q_w
    pgr = [(p["quality"] - q_w) / gap if gap else 0.0 for p in c]
    apgr = float(np.trapezoid(pgr, [p["strong_share"] for p in c])) if gap else 0.0
    out: dict[str, Any] = {
        "n": len(scores),
        "weak_quality": q_w,
        "strong_quality": q_s,
        "apgr": apgr,
        "random_apgr": 0.5,
    }
    for frac in (0.9, 0.95, 1.0):
        share = _share_for(c, frac * q_s)
        out[f"strong_share_at_{int(frac * 100)}pct"] = share
        out[f"cost_saved_at_{int(frac * 100)}pct"] = 1 - (share + (1 - share) * price_ratio)
        # random router: quality linear in share
        rand = max(0.0, (frac * q_s - q_w) / gap) if gap else 0.0
        out[f"random_strong_share_at_{int(frac * 100)}pct"] = min(1.0, rand)
    out["curve"] = c[::10]
    return out
