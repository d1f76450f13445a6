"""When to speculate: confidence, the edge's own arithmetic, and the load shedder.

With step times T1 (A) and T2 (B) and a guess right with probability p, a hit saves
min(T1, T2) of latency and a miss burns about min(T1, T2) of B's engine time (B runs
until A finishes, then is cancelled). So an edge speculates on a guess only when

- its confidence clears ``threshold``;
- ``p * saving > cost_factor * (1 - p) * waste``, with saving and waste the edge's
  running means (:class:`EdgeStats`) and p the guess's confidence, calibrated by the
  edge's observed hit rate once ``min_samples`` speculations have been judged;
- no load shedder in the pipeline is queueing or at its concurrency limit: a speculative
  request is the first thing to drop when the engine is short of capacity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flowopt._speculate_spec import SpeculateSpec
from flowopt.speculate.guessers import Guess

__all__ = ["EdgeStats", "Gate", "shedding"]

_EWMA = 0.2


@dataclass(slots=True)
class EdgeStats:
    """Running figures of one speculated edge (all times in milliseconds)."""

    edge: str
    runs: int = 0
    speculated: int = 0
    hits: int = 0
    misses: int = 0
    cancelled: int = 0  # wrong-guess branches still running when A answered
    a_failed: int = 0
    skipped_shed: int = 0
    skipped_gate: int = 0
    t1_ms: float = 0.0  # EWMA of A's duration
    t2_ms: float = 0.0  # EWMA of B's duration (committed or non-speculative runs)
    conf_sum: float = 0.0  # of judged speculations (calibration)
    saved_ms: float = 0.0
    lost_ms: float = 0.0
    wasted_tokens: int = 0
    b_tokens: int = 0  # of B's completed runs (b_runs of them)
    b_runs: int = 0

    @property
    def hit_rate(self) -> float:
        judged = self.hits + self.misses
        return self.hits / judged if judged else 0.0

    @property
    def bound(self) -> float:
        """The theoretical saving p*min(T1,T2)/(T1+T2) at the observed figures."""
        total = self.t1_ms + self.t2_ms
        return self.hit_rate * min(self.t1_ms, self.t2_ms) / total if total else 0.0

    def observe_t1(self, ms: float) -> None:
        self.t1_ms = ms if self.t1_ms == 0 else _EWMA * ms + (1 - _EWMA) * self.t1_ms

    def observe_t2(self, ms: float) -> None:
        self.t2_ms = ms if self.t2_ms == 0 else _EWMA * ms + (1 - _EWMA) * self.t2_ms


def shedding(layers: Sequence[tuple[str, Any]]) -> bool:
    """Whether any load shedder among ``layers`` (nested stacks included) is queueing
    requests or running at its concurrency limit."""
    for _, layer in layers:
        pools = getattr(layer, "pools", None)
        limit = getattr(layer, "max_concurrency", None)
        if isinstance(pools, dict) and isinstance(limit, int):
            for pool in pools.values():
                if pool.queue or pool.active >= limit:
                    return True
        inner = getattr(layer, "layers", None)
        if isinstance(inner, list) and shedding(inner):
            return True
    return False


class Gate:
    """The speculate-or-not decision of one edge (see the module docstring)."""

    def __init__(self, edge: SpeculateSpec, layers: Sequence[tuple[str, Any]]) -> None:
        self.edge = edge
        self.layers = layers
        self.stats = EdgeStats(edge.edge)

    def probability(self, confidence: float) -> float:
        s = self.stats
        judged = s.hits + s.misses
        if judged < self.edge.min_samples or s.conf_sum <= 0:
            return confidence
        return min(1.0, confidence * s.hits / s.conf_sum)

    def admit(self, guesses: Sequence[Guess]) -> tuple[list[Guess], str]:
        """The guesses to start (maybe none) and why."""
        if shedding(self.layers):
            self.stats.skipped_shed += 1
            return [], "shed"
        keep: list[Guess] = []
        span = min(self.stats.t1_ms, self.stats.t2_ms)
        for g in guesses:
            if g.confidence < self.edge.threshold:
                continue
            p = self.probability(g.confidence)
            if span > 0 and p * span <= self.edge.cost_factor * (1 - p) * span:
                continue
            keep.append(g)
        if not keep:
            self.stats.skipped_gate += 1
            return [], "gate"
        return keep, "speculate"
