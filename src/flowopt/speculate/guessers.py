"""Guessers: what step A will most likely output, with a confidence.

A guesser is any object with ``guess(text, labels, k) -> list[Guess]`` (best first) and
``observe(text, actual)`` (called with A's real output after every run, so a guesser may
learn online). They are plugins like middleware: registered by name in
:data:`flowopt.registry.guessers` (entry point group ``flowopt.guessers``), and named in a
spec as ``guesser: {tfidf: {model: m.npz}}``. Built in:

- ``tfidf``: TF-IDF + logistic regression trained offline (``flowopt speculate train``);
  served with numpy only (:mod:`flowopt.speculate._tfidf`).
- ``lookup``: what A returned before for the same input (normalised: case, spacing,
  punctuation); the confidence is the share of past runs that returned it, Laplace
  smoothed ((n + 1) / (runs + 2): 2/3 for an input seen once). Learns as it runs;
  bounded, least recently used entries go first.

A guess outside the edge's label set is dropped by the speculator, never run.
"""

from __future__ import annotations

import re
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from flowopt import registry
from flowopt.speculate._tfidf import TfidfModel

__all__ = ["Guess", "Guesser", "LookupGuesser", "TfidfGuesser"]


@dataclass(frozen=True, slots=True)
class Guess:
    """One guess of step A's output and the guesser's probability that it is right."""

    label: str
    confidence: float


@runtime_checkable
class Guesser(Protocol):
    """The guesser protocol (see the module docstring)."""

    def guess(self, text: str, labels: Sequence[str], k: int) -> list[Guess]: ...

    def observe(self, text: str, actual: str) -> None: ...


class TfidfGuesser:
    """Options: ``model`` (an ``.npz`` written by ``flowopt speculate train``)."""

    def __init__(self, model: str) -> None:
        self.path = model
        self.model = TfidfModel.load(model)

    def guess(self, text: str, labels: Sequence[str], k: int) -> list[Guess]:
        proba = self.model.proba(text)
        allowed = set(labels)
        ranked = sorted(
            (Guess(c, float(p)) for c, p in zip(self.model.classes, proba, strict=True)),
            key=lambda g: -g.confidence,
        )
        return [g for g in ranked if g.label in allowed][:k]

    def observe(self, text: str, actual: str) -> None:
        return None  # trained offline


_PUNCT = re.compile(r"[^\w\s]+")


def _norm(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


class LookupGuesser:
    """Options: ``max_entries`` (inputs remembered, default 10,000)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[str, Counter[str]] = OrderedDict()

    def guess(self, text: str, labels: Sequence[str], k: int) -> list[Guess]:
        counts = self._seen.get(_norm(text))
        if not counts:
            return []
        total = sum(counts.values())
        allowed = set(labels)
        return [
            Guess(label, (n + 1) / (total + 2))
            for label, n in counts.most_common()
            if label in allowed
        ][:k]

    def observe(self, text: str, actual: str) -> None:
        key = _norm(text)
        counts = self._seen.pop(key, None) or Counter()
        counts[actual] += 1
        self._seen[key] = counts
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)


for _name, _cls in (("tfidf", TfidfGuesser), ("lookup", LookupGuesser)):
    if _name not in registry.guessers.entries():
        registry.guessers.register(_name, _cls, distribution="flowopt")
