"""The classifier seam of triage: text (and request metadata) in, a difficulty score out.

A classifier returns a :class:`Verdict`: ``score`` in [0, 1] (how likely the cheapest tier
gets this wrong), an optional forced ``tier`` (rules may name one outright), and a human
``reason`` that goes on the span. Triage maps the score to a tier with thresholds, so one
classifier serves two or more tiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from flowopt.types import Request

__all__ = ["Classifier", "Verdict"]


@dataclass(frozen=True, slots=True)
class Verdict:
    score: float
    reason: str
    tier: str | None = None


@runtime_checkable
class Classifier(Protocol):
    name: str

    async def classify(self, request: Request) -> Verdict: ...
