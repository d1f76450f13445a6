"""When to speculate: confidence, the edge's own arithmetic, a waste budget, and load.

With step times T1 (A) and T2 (B) and a guess right with probability p, a hit saves
min(T1, T2) of latency and a miss burns about min(T1, T2) of B's engine time (B runs
until A answers, then is cancelled). An edge starts a guess only when

- no load shedder in the pipeline is queueing or at its concurrency limit, and B's
  backend does not report requests waiting in its engine queue (``max_queued``; read
  off the request path by :class:`~flowopt.speculate._queue.QueueProbe`): a speculative
  request is the first thing to drop when the engine is short of capacity;
- the guess's confidence clears ``threshold``;
- ``p * saving > cost_factor * (1 - p) * waste``, with saving and waste the edge's
  running means (:class:`EdgeStats`) and p the guess's probability calibrated on every
  judged guess of the edge, by confidence and by label
  (:class:`~flowopt.speculate._calibrate.Calibrator`);
- the expected wasted B tokens stay within ``max_waste`` of B's tokens
  (:class:`~flowopt.speculate._calibrate.WasteBudget`): the most probable guesses of
  recent traffic get the budget first;
- and the ledger affords it: tokens really wasted so far, plus what every started but
  unsettled guess (this one included) could still waste, stay within ``max_waste`` of the
  B tokens already spent. The expectation picks *which* guesses; the ledger makes
  ``max_waste`` a bound on the realised share rather than an average that drifts over.
  The caller hands each run's reservation back with :meth:`Gate.settle` once its real
  waste is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flowopt._speculate_spec import SpeculateSpec
from flowopt.speculate._calibrate import Calibrator, WasteBudget
from flowopt.speculate._queue import QueueProbe
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
    skipped_queue: int = 0  # B's backend reported waiting requests
    skipped_gate: int = 0  # threshold or expected value
    skipped_budget: int = 0  # the waste budget could not afford the guess
    queue_unknown: int = 0  # decisions taken without a fresh reading of B's queue
    t1_ms: float = 0.0  # EWMA of A's duration
    t2_ms: float = 0.0  # EWMA of B's duration (committed or non-speculative runs)
    saved_ms: float = 0.0
    lost_ms: float = 0.0
    wasted_input_tokens: int = 0
    wasted_output_tokens: int = 0
    wasted_cost: float = 0.0
    b_input_tokens: int = 0  # of B's completed runs (b_runs of them)
    b_output_tokens: int = 0
    b_runs: int = 0
    b_cost: float = 0.0  # of B's completed runs whose responses carried a cost
    b_priced: int = 0
    miss_share: float = 0.0  # EWMA: share of one B run's tokens a wrong guess wasted

    @property
    def hit_rate(self) -> float:
        judged = self.hits + self.misses
        return self.hits / judged if judged else 0.0

    @property
    def wasted_tokens(self) -> int:
        return self.wasted_input_tokens + self.wasted_output_tokens

    @property
    def b_tokens(self) -> int:
        return self.b_input_tokens + self.b_output_tokens

    @property
    def waste_share(self) -> float:
        """Wasted tokens as a share of B's tokens (the figure ``max_waste`` bounds)."""
        return self.wasted_tokens / self.b_tokens if self.b_tokens else 0.0

    @property
    def bound(self) -> float:
        """The theoretical saving p*min(T1,T2)/(T1+T2) at the observed figures."""
        total = self.t1_ms + self.t2_ms
        return self.hit_rate * min(self.t1_ms, self.t2_ms) / total if total else 0.0

    def observe_t1(self, ms: float) -> None:
        self.t1_ms = ms if self.t1_ms == 0 else _EWMA * ms + (1 - _EWMA) * self.t1_ms

    def observe_t2(self, ms: float) -> None:
        self.t2_ms = ms if self.t2_ms == 0 else _EWMA * ms + (1 - _EWMA) * self.t2_ms

    def observe_miss_share(self, share: float) -> None:
        first = self.miss_share <= 0
        self.miss_share = share if first else _EWMA * share + (1 - _EWMA) * self.miss_share


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
    """The speculate-or-not decision of one edge (see the module docstring).
    ``queue``: a probe of B's backend queue (``None``: not read)."""

    def __init__(
        self,
        edge: SpeculateSpec,
        layers: Sequence[tuple[str, Any]],
        queue: QueueProbe | None = None,
    ) -> None:
        self.edge = edge
        self.layers = layers
        self.queue = queue
        self.stats = EdgeStats(edge.edge)
        self.calibrator = Calibrator(prior=float(edge.min_samples))
        self.budget = WasteBudget(edge.max_waste)
        self.queue_unknown = False  # the last decision had no fresh queue reading
        self.reserved = 0.0  # tokens the last admitted run reserved (read it at once)
        self.in_flight = 0.0  # tokens reserved by started guesses not yet settled

    def probability(self, guess: Guess) -> float:
        """The calibrated probability that ``guess`` is A's real output."""
        return self.calibrator.probability(guess)

    def miss_share(self) -> float:
        """Share of one B run's tokens a wrong guess wastes: measured once misses were
        seen, else min(1, T1/T2) (B runs until A answers), else 1 (nothing known)."""
        s = self.stats
        if s.miss_share > 0:
            return s.miss_share
        if s.t1_ms > 0 and s.t2_ms > 0:
            return min(1.0, s.t1_ms / s.t2_ms)
        return 1.0

    def settle(self, reserved: float) -> None:
        """A run's real waste is on the books: release what its guesses reserved."""
        self.in_flight = max(0.0, self.in_flight - reserved)

    def judge(self, guesses: Sequence[Guess], actual: str) -> None:
        """A answered ``actual``: every guess of the run is judged (started or not)."""
        for g in guesses:
            self.calibrator.observe(g, g.label == actual)

    def _queued(self) -> bool:
        self.queue_unknown = False
        if self.queue is None or self.edge.max_queued is None:
            return False
        waiting = self.queue.waiting()
        if waiting is None:
            self.queue_unknown = True
            self.stats.queue_unknown += 1
            return False
        return waiting > self.edge.max_queued

    def admit(self, guesses: Sequence[Guess]) -> tuple[list[Guess], str]:
        """The guesses to start (maybe none) and why (``speculate``, ``shed``,
        ``queue``, ``gate`` or ``budget``)."""
        s = self.stats
        self.reserved = 0.0
        ps = [self.probability(g) for g in guesses]
        self.budget.note(ps)
        if shedding(self.layers):
            s.skipped_shed += 1
            return [], "shed"
        if self._queued():
            s.skipped_queue += 1
            return [], "queue"
        keep: list[Guess] = []
        why = "gate"
        span = min(s.t1_ms, s.t2_ms)
        r = self.miss_share()
        mean_b = s.b_tokens / s.b_runs if s.b_runs else 0.0
        unit = self.budget.reservation(mean_b, r)
        reserved = 0.0
        for g, p in zip(guesses, ps, strict=True):
            if g.confidence < self.edge.threshold:
                continue
            if span > 0 and p * span <= self.edge.cost_factor * (1 - p) * span:
                continue
            ledger = self.budget.affords(
                s.wasted_tokens, s.b_tokens, self.in_flight + reserved, unit
            )
            if not (self.budget.allows(p, r) and ledger):
                why = "budget"
                continue
            keep.append(g)
            reserved += unit
        self.reserved = reserved
        self.in_flight += reserved
        if not keep:
            if why == "budget":
                s.skipped_budget += 1
            else:
                s.skipped_gate += 1
            return [], why
        return keep, "speculate"
