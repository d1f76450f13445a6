"""Measure the compressor's cost before the first "only when it pays" decision.

The cost model starts from a prior (1 ms per token). A prior that is too low makes the
first decisions compress where compression cannot pay (on a loaded CPU the scorer measured
30 ms/token), and those requests are slower than not compressing at all. So before the
first ``auto`` decision the middleware runs the real selection once on a built-in sample
of the same shape (several passages and a question, at the configured ratio) and starts
the cost model from that measurement. Loading the scorer and ranker is done first and not
timed: it is paid once, whatever the decision.
"""

from __future__ import annotations

import time

from flowopt.compress._select import select
from flowopt.compress.ranker import Ranker
from flowopt.compress.scorer import Scorer

__all__ = ["calibrate"]

_TOPICS = (
    "The harbour town kept a ledger of every ship that entered during the winter months",
    "Farmers in the upper valley rotated wheat, barley and clover to keep the soil rich",
    "The old observatory recorded comets with a brass telescope built by local smiths",
    "Traders carried salt and wool along the ridge road before the railway was finished",
    "The village school taught arithmetic, geography and music to children of all ages",
    "A stone bridge replaced the ferry after floods destroyed the wooden crossing twice",
)
_FILLER = (
    "Records from that period describe the work in detail, and later historians compared "
    "them with letters, maps and the accounts of travellers who passed through the region "
    "on their way to the markets of the coast."
)
_QUESTION = "When was the stone bridge built to replace the ferry?"


def sample() -> list[str]:
    """Six passages of ~100 words: the shape of a retrieval prompt."""
    return [f"{topic}. {_FILLER} {_FILLER} {_FILLER}" for topic in _TOPICS]


def calibrate(
    scorer: Scorer, ranker: Ranker | None, *, ratio: float, coarse: bool
) -> tuple[int, float]:
    """Run one selection on :func:`sample` at ``ratio``: (input tokens, seconds taken)."""
    passages = sample()
    scorer.token_scores("Warm up the scorer.")  # loads the model: not part of the cost
    if ranker is not None:
        ranker(["Warm up the ranker."], "warm up")
    tokens = sum(scorer.count_tokens(p) for p in passages)
    started = time.perf_counter()
    select(
        scorer,
        passages,
        question=_QUESTION,
        target_tokens=max(1, int(tokens / ratio)),
        coarse=coarse,
        ranker=ranker,
    )
    return tokens, time.perf_counter() - started
