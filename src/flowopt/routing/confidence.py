"""Confidence of an answer from its token logprobs (what the cascade accepts on).

- ``mean``: geometric-mean token probability, ``exp(mean logprob)`` — the usual choice for
  free text; long answers are not punished for their length.
- ``min``: the least likely token — strict; one shaky token (a digit in a number) fails it.
- ``first``: the first token's probability — right for one-word/letter answers (MMLU).

Why logprobs: they come free with the answer (vLLM returns them), no second call. They
measure the model's certainty, not correctness: small models are confidently wrong, which
is why ``docs/triage.md`` reports the measured acceptance/accuracy trade-off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from flowopt.types import TokenLogprob

__all__ = ["Method", "confidence"]

Method = Literal["mean", "min", "first"]


def confidence(logprobs: Sequence[TokenLogprob] | None, method: Method = "mean") -> float | None:
    """A probability in [0, 1], or None when there are no logprobs to judge by."""
    lps = [t.logprob for t in (logprobs or ()) if t.token.strip() or t.token == " "]
    if not lps:
        lps = [t.logprob for t in (logprobs or ())]
    if not lps:
        return None
    if method == "first":
        return math.exp(lps[0])
    if method == "min":
        return math.exp(min(lps))
    return math.exp(sum(lps) / len(lps))
