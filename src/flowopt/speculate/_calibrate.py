"""What a guess is worth: its probability of being right, learned online, and the waste
budget that decides which guesses the engine can afford.

Why learn from every run, not only from speculated ones: A's real output is known after
every run, so every guess the guesser made is judged, started or not. Calibrating on the
started guesses alone would learn only about the guesses the gate already liked (a
selection bias that hides an over-cautious gate forever).

:class:`Calibrator` turns a guess's confidence into a probability in two shrinkage
steps, each a Beta-binomial posterior mean with ``prior`` pseudo-observations:

1. by confidence bin (tenths): p_conf = (hits_bin + prior * c) / (judged_bin + prior),
   i.e. the guesser's own confidence c until its bin has evidence of its own;
2. by label: p = (hits_label + prior * p_conf) / (judged_label + prior), since a guesser
   is often reliable on some labels (a common, distinct intent) and poor on others.

Old evidence fades (counts halve past ``_CAP`` judged guesses) so a guesser that learns
online (``lookup``) is judged on what it does now.

:class:`WasteBudget` keeps the expected wasted step-B tokens under a share of B's
tokens. A wrong guess wastes about r of one B run (r: the measured share, or
min(1, T1/T2) before any miss, since B runs until A answers). Over the recent runs,
speculating on every guess with probability >= q wastes, per run,

    W(q) = r * sum over recent guesses with p_i >= q of (1 - p_i) / runs.

Both the value of a guess (p) and its waste (1 - p) favour the most probable guesses,
so the best use of the budget is a threshold: a guess is started when W(p) <= budget,
wherever its probability ranks among recent traffic. The rule adapts to the edge's own
hit rates and step times; nothing in it is fitted to a data set.

W(p) is an expectation, and expectations drift over: probabilities are estimates, r is a
running mean, and a short stretch of bad luck is real waste. So the budget is also a
*ledger* that holds on what really happened (:meth:`WasteBudget.affords`): a guess is
started only if the tokens already wasted, plus a reservation for every guess still in
flight, plus this guess's reservation, stay within ``share`` of the B tokens already
spent. A reservation is what the guess could waste if it misses (``_RESERVE`` times r of
an average B run, at most one run): it is charged up front, before anyone knows whether
the guess is right, and released when the run's real waste is on the books. The ledger
never lends: before B has run at all, or right after a run of misses, the edge waits
until enough plain B tokens have paid for the next guess.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from flowopt.speculate.guessers import Guess

__all__ = ["Calibrator", "WasteBudget"]

_BINS = 10
_CAP = 500.0
_RESERVE = 1.5  # a reservation is this many times the expected miss share (at most 1 run)


class _Rate:
    """Hits over judged guesses, with fading evidence."""

    __slots__ = ("hits", "judged")

    def __init__(self) -> None:
        self.hits = 0.0
        self.judged = 0.0

    def add(self, hit: bool) -> None:
        self.hits += hit
        self.judged += 1
        if self.judged > _CAP:
            self.hits /= 2
            self.judged /= 2

    def shrink(self, prior_mean: float, prior: float) -> float:
        return (self.hits + prior * prior_mean) / (self.judged + prior)


class Calibrator:
    """P(guess is right) from its confidence, its bin's and its label's record."""

    def __init__(self, prior: float) -> None:
        self.prior = prior
        self._bins = [_Rate() for _ in range(_BINS)]
        self._labels: dict[str, _Rate] = {}

    @staticmethod
    def _bin(confidence: float) -> int:
        return min(_BINS - 1, max(0, int(confidence * _BINS)))

    def probability(self, guess: Guess) -> float:
        c = min(1.0, max(0.0, guess.confidence))
        p = self._bins[self._bin(c)].shrink(c, self.prior)
        rate = self._labels.get(guess.label)
        return p if rate is None else rate.shrink(p, self.prior)

    def observe(self, guess: Guess, hit: bool) -> None:
        self._bins[self._bin(guess.confidence)].add(hit)
        # the label set is closed (the edge's labels), so this dict is bounded
        self._labels.setdefault(guess.label, _Rate()).add(hit)


class WasteBudget:
    """Which guesses the waste budget affords (see the module docstring)."""

    def __init__(self, share: float, window: int = 200) -> None:
        self.share = share
        self._runs: deque[tuple[float, ...]] = deque(maxlen=window)

    def note(self, probabilities: Sequence[float]) -> None:
        """Record one run's guesses (none: a run that could not speculate still adds
        B tokens the budget is a share of)."""
        self._runs.append(tuple(probabilities))

    def expected_waste(self, p: float, miss_share: float) -> float:
        """W(p): wasted share of B's tokens when every recent guess >= p is started."""
        if not self._runs:
            return 0.0
        lost = sum(1.0 - q for run in self._runs for q in run if q >= p)
        return miss_share * lost / len(self._runs)

    def allows(self, p: float, miss_share: float) -> bool:
        return self.share >= 1.0 or self.expected_waste(p, miss_share) <= self.share

    @staticmethod
    def reservation(mean_b_tokens: float, miss_share: float) -> float:
        """Tokens a started guess may waste if it misses (charged before it is judged)."""
        return mean_b_tokens * min(1.0, _RESERVE * miss_share)

    def affords(self, wasted: float, b_tokens: float, in_flight: float, reserve: float) -> bool:
        """The ledger: ``wasted`` tokens so far, ``in_flight`` tokens reserved by guesses
        not yet settled and ``reserve`` for this one stay within ``share`` of the
        ``b_tokens`` B has already spent."""
        if self.share >= 1.0:
            return True
        return reserve > 0 and wasted + in_flight + reserve <= self.share * b_tokens
