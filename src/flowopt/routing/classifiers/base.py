"""The classifier seam of triage: text (and request metadata) in, a difficulty score out.

A classifier returns a :class:`Verdict`: ``score`` in [0, 1] (how likely the cheapest tier
gets this wrong), an optional forced ``tier`` (rules may name one outright), and a human
``reason`` that goes on the span. Triage maps the score to a tier with thresholds, so one
classifier serves two or more tiers.

``call`` is the rest of the middleware stack below triage: a classifier that asks a model
(the LLM judge) sends its side request through it, routed to its backend, so the side call
is traced, rate-limited, shed and retried like any other hop. Classifiers that only look
at the text ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from flowopt.middleware.base import CallNext
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

    async def classify(self, request: Request, call: CallNext) -> Verdict: ...
