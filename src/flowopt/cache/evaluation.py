"""``flowopt cache eval``: measure what the cache would serve on a labelled pairs file.

Why it goes through :class:`~flowopt.cache.engine.CacheEngine`: a benchmark that re-implements
the decision ("cosine above t") measures something other than what users get. Here every
question is turned into a :class:`~flowopt.types.Request`, keyed with
:func:`~flowopt.cache.keys.cache_key`, stored with ``engine.put`` and looked up with
``engine.lookup``: the middleware's own calls. Only the embeddings are computed in one batch
up front (the embedder's memo then answers the per-lookup calls), because embedding 40,000
questions one by one would take minutes for no information.

Protocols (over a pairs file: one ``{"a", "b", "duplicate"}`` object a line):

- **pairwise**: for each pair a cache holding only ``a`` (under its own tenant) is asked
  ``b``; a served hit on a ``duplicate: 0`` pair is a false hit.
- **crowded**: every ``a`` in one tenant's cache, every ``b`` looked up; a hit is true only
  if the duplicate labels link the served ``a`` to ``b`` (transitively).

A served hit does not depend on the threshold except through "the best candidate's
probability reaches it" (:func:`~flowopt.cache.engine.choose`), so one pass records enough
to draw the whole curve exactly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowopt.cache.config import CacheConfig
from flowopt.cache.embedder import Embedder
from flowopt.cache.engine import CacheEngine
from flowopt.cache.keys import cache_key
from flowopt.cache.stores.memory import MemoryStore
from flowopt.cache.verifier import Verifier
from flowopt.types import Request, Response

__all__ = ["EvalResult", "Outcome", "evaluate", "load_pairs"]

_MODEL = "eval-model@0"
_DEFAULT_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)


def load_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Read a pairs file: one ``{"a", "b", "duplicate"}`` object per line."""
    rows = []
    with Path(path).open() as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not {"a", "b", "duplicate"} <= row.keys():
                raise ValueError(f"{path}:{n}: a pair needs 'a', 'b' and 'duplicate'")
            rows.append(row)
    return rows


@dataclass(frozen=True, slots=True)
class Outcome:
    """One lookup: whether the exact tier answered, the best verified candidate's
    probability, and whether serving that candidate would be right."""

    exact: bool
    probability: float | None
    correct: bool
    answerable: bool


@dataclass
class EvalResult:
    protocol: str
    lookups: int
    answerable: int
    outcomes: list[Outcome]
    seconds: float
    threshold: float
    grid: Sequence[float] = _DEFAULT_GRID
    extra: dict[str, Any] = field(default_factory=dict)

    def at(self, threshold: float) -> dict[str, Any]:
        served = [o for o in self.outcomes if o.exact or (o.probability or -1.0) >= threshold]
        served_n = len(served)
        true_n = sum(1 for o in served if o.correct)
        false_n = served_n - true_n
        return {
            "threshold": threshold,
            "served": served_n,
            "true_hits": true_n,
            "false_hits": false_n,
            "precision": round(true_n / served_n, 4) if served_n else None,
            "recall": round(true_n / self.answerable, 4) if self.answerable else None,
            "false_hits_per_1k": round(1000.0 * false_n / max(1, self.lookups), 2),
        }

    def curve(self) -> list[dict[str, Any]]:
        return [self.at(t) for t in sorted({*self.grid, self.threshold})]

    def best_precision_at_recall(self, recall: float) -> dict[str, Any] | None:
        """The operating point with the highest precision whose recall is >= ``recall``."""
        probs = sorted({o.probability for o in self.outcomes if o.probability is not None})
        best: dict[str, Any] | None = None
        for t in probs:
            point = self.at(t)
            if point["recall"] is None or point["recall"] < recall or point["precision"] is None:
                continue
            if best is None or point["precision"] > best["precision"]:
                best = point
        return best

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "lookups": self.lookups,
            "duplicates": self.answerable,
            "lookups_per_s": round(self.lookups / self.seconds, 1) if self.seconds else None,
            "at_threshold": self.at(self.threshold),
            "best_precision_at_recall_50": self.best_precision_at_recall(0.5),
            "best_precision_at_recall_30": self.best_precision_at_recall(0.3),
            "curve": self.curve(),
            **self.extra,
        }


class _Links:
    """Union-find over question texts joined by ``duplicate: 1`` labels."""

    def __init__(self, pairs: Iterable[dict[str, Any]]) -> None:
        self.parent: dict[str, str] = {}
        for p in pairs:
            self.find(p["a"])
            self.find(p["b"])
            if int(p["duplicate"]) == 1:
                ra, rb = self.find(p["a"]), self.find(p["b"])
                if ra != rb:
                    self.parent[ra] = rb

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root


def _request(text: str, tenant: str) -> Request:
    return Request.chat(text, params={"temperature": 0.0}, tenant=tenant)


def _outcome(engine: CacheEngine, request: Request) -> tuple[bool, float | None, str | None]:
    key = cache_key(request, model_identity=_MODEL, scope=engine.config.scope)
    result = engine.lookup(key)
    if result.tier == "exact" and result.entry is not None:
        return True, None, result.entry.text
    if not result.checked:
        return False, None, None
    best = max(result.checked, key=lambda c: c.probability)
    return False, best.probability, best.candidate.entry.text


def _store(engine: CacheEngine, text: str, tenant: str, answer: str) -> None:
    request = _request(text, tenant)
    key = cache_key(request, model_identity=_MODEL, scope=engine.config.scope)
    vec = engine.embedder.embed(text) if engine.embedder is not None else None
    entry = engine.make_entry(key, Response(text=answer, model=_MODEL), vector=vec)
    engine.put(key, entry)


def evaluate(
    pairs: Sequence[dict[str, Any]],
    *,
    config: CacheConfig,
    embedder: Embedder,
    verifier: Verifier | None,
    protocols: Sequence[str] = ("pairwise", "crowded"),
    grid: Sequence[float] | None = None,
) -> dict[str, EvalResult]:
    """Run the protocols; returns one :class:`EvalResult` per protocol."""
    texts = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    prime: Callable[[Sequence[str]], None] | None = getattr(embedder, "prime", None)
    if prime is not None:
        prime(texts)
    results: dict[str, EvalResult] = {}
    if grid is None:
        grid = _DEFAULT_GRID if config.verify else tuple(np.round(np.arange(0.70, 1.0, 0.02), 2))

    def engine() -> CacheEngine:
        store = MemoryStore(max_entries=max(16, 2 * len(pairs)), dim=embedder.dim)
        return CacheEngine(config, store, embedder=embedder, verifier=verifier)

    if "pairwise" in protocols:
        eng = engine()
        for i, p in enumerate(pairs):
            _store(eng, p["a"], f"pair-{i}", f"answer-{i}")
        outcomes = []
        t0 = time.perf_counter()
        for i, p in enumerate(pairs):
            dup = int(p["duplicate"]) == 1
            exact, prob, _ = _outcome(eng, _request(p["b"], f"pair-{i}"))
            outcomes.append(Outcome(exact, prob, dup, dup))
        seconds = time.perf_counter() - t0
        results["pairwise"] = EvalResult(
            "pairwise",
            len(pairs),
            sum(1 for p in pairs if int(p["duplicate"]) == 1),
            outcomes,
            seconds,
            eng.threshold,
            grid,
        )

    if "crowded" in protocols:
        links = _Links(pairs)
        eng = engine()
        roots_in_cache: set[str] = set()
        for p in pairs:
            _store(eng, p["a"], "crowded", p["a"])
            roots_in_cache.add(links.find(p["a"]))
        outcomes = []
        t0 = time.perf_counter()
        for p in pairs:
            root = links.find(p["b"])
            exact, prob, served = _outcome(eng, _request(p["b"], "crowded"))
            correct = served is not None and links.find(served) == root
            outcomes.append(Outcome(exact, prob, correct, root in roots_in_cache))
        seconds = time.perf_counter() - t0
        answerable = sum(1 for o in outcomes if o.answerable)
        results["crowded"] = EvalResult(
            "crowded", len(pairs), answerable, outcomes, seconds, eng.threshold, grid
        )
    return results
