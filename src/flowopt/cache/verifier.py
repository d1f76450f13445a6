"""The second look before a semantic hit is served.

Why: cosine similarity alone cannot tell a paraphrase from a near-miss on the same topic
(MiniLM with a bare threshold reaches only ~78% precision at 50% recall on QQP's hard
negatives). The verifier scores a (query, cached question) pair with a small network over
:func:`flowopt.cache.features.pair_vector` (hand features for question word, negation,
number, entity and content-word mismatches, plus the embeddings' ``|u-v|`` and ``u*v``)
and returns the probability that the two ask the same thing. A hit is served only when
that probability clears the threshold.

The weights ship in ``flowopt/data/cache_verifier.npz`` and are rebuilt by
``scripts/train_cache_verifier.py`` from the dev pairs file (seeded, reproducible). The
file also records the operating thresholds chosen on the training split, so "precision
first" is the default without anybody tuning anything. Inference is numpy only: two small
matrix products, ~30 µs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from flowopt.cache.features import pair_vector
from flowopt.errors import ConfigError

__all__ = ["LearnedVerifier", "Verdict", "Verifier", "default_weights_path"]

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The verifier's answer: ``accept`` and the probability it is based on."""

    accept: bool
    probability: float
    reason: str


@runtime_checkable
class Verifier(Protocol):
    """Decides whether a cached question is the same question as the query."""

    threshold: float

    def probability(self, query: str, cached: str, query_vec: Vector, cached_vec: Vector) -> float:
        ...

    def verify(self, query: str, cached: str, query_vec: Vector, cached_vec: Vector) -> Verdict:
        ...


def default_weights_path() -> Path:
    return Path(str(resources.files("flowopt") / "data" / "cache_verifier.npz"))


class LearnedVerifier:
    """A small MLP (or logistic regression: no hidden layer) over pair features.

    ``threshold`` is the minimum probability to accept; ``None`` takes the shipped default
    operating point (``operating_point`` picks another recorded one, e.g. ``"p99"``).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        threshold: float | None = None,
        operating_point: str = "default",
    ) -> None:
        p = Path(path) if path is not None else default_weights_path()
        if not p.exists():
            raise ConfigError(
                f"verifier weights not found at {p}",
                hint="run `python scripts/train_cache_verifier.py` to rebuild them",
            )
        with np.load(p, allow_pickle=False) as data:
            self.mean = data["mean"].astype(np.float32)
            self.scale = data["scale"].astype(np.float32)
            n_layers = int(data["n_layers"])
            self.layers = [
                (data[f"W{i}"].astype(np.float32), data[f"b{i}"].astype(np.float32))
                for i in range(n_layers)
            ]
            self.meta: dict[str, Any] = json.loads(str(data["meta"]))
        points: dict[str, float] = self.meta.get("operating_points", {})
        if threshold is None:
            if operating_point not in points:
                raise ConfigError(
                    f"unknown verifier operating point {operating_point!r}",
                    hint=f"use one of {sorted(points)} or pass threshold=",
                )
            threshold = float(points[operating_point])
        self.threshold = float(threshold)
        self.path = p

    def probability_of(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Probabilities for a matrix of :func:`pair_vector` rows (batch form)."""
        h = (features - self.mean) / self.scale
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i != last:
                h = np.maximum(h, 0.0)
        logit = h[:, 0]
        return (1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))).astype(np.float32)

    def probability(self, query: str, cached: str, query_vec: Vector, cached_vec: Vector) -> float:
        x = pair_vector(query, cached, query_vec, cached_vec)[None, :]
        return float(self.probability_of(x)[0])

    def verify(self, query: str, cached: str, query_vec: Vector, cached_vec: Vector) -> Verdict:
        p = self.probability(query, cached, query_vec, cached_vec)
        if p >= self.threshold:
            return Verdict(True, p, "accepted")
        return Verdict(False, p, "rejected")
