"""The second look before a semantic hit is served.

Why: cosine similarity alone cannot tell a paraphrase from a near-miss on the same topic
(MiniLM with a bare threshold reaches only ~78% precision at 50% recall on QQP's hard
negatives). The verifier scores a (query, cached question) pair with a small network over
:func:`flowopt.cache._features.pair_vector` (hand features for question word, negation,
number, entity and content-word mismatches, and which words the two texts do not share
and how topical those are)
and returns the probability that the two ask the same thing. A hit is served only when
that probability clears the threshold.

The weights ship in ``flowopt/data/cache_verifier.npz`` and are rebuilt by
``scripts/train_cache_verifier.py`` from the dev pairs file (seeded, reproducible). The
file also records the operating thresholds chosen on a calibration split, so "precision
first" is the default without anybody tuning anything. Inference is numpy only: all trees
are walked at once, level by level, in well under a millisecond.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from flowopt.cache._features import pair_vector, vetoed
from flowopt.errors import ConfigError

__all__ = ["LearnedVerifier", "Verdict", "Verifier", "default_weights_path"]

Vector = npt.NDArray[np.float32]
FORMAT = "flowopt-cache-verifier/3"
"""Weights format: /2 added the word-alignment features and made the raw embedding
features optional (``embedding_features`` in the metadata); /3 added the
``code_mismatch`` feature (the columns after it moved) and the calibration curve."""
_TARGET = re.compile(r"p(\d+(?:\.\d+)?)")  # an operating point given as target precision


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

    def probability(
        self, query: str, cached: str, query_vec: Vector, cached_vec: Vector
    ) -> float: ...

    def verify(self, query: str, cached: str, query_vec: Vector, cached_vec: Vector) -> Verdict: ...


def default_weights_path() -> Path:
    return Path(str(resources.files("flowopt") / "data" / "cache_verifier.npz"))


class _Trees:
    """Gradient-boosted trees flattened into arrays; evaluated for all trees at once."""

    def __init__(self, data: Any) -> None:
        self.feature = data["t_feature"].astype(np.int64)
        self.threshold = data["t_threshold"].astype(np.float64)
        self.left = data["t_left"].astype(np.int64)
        self.right = data["t_right"].astype(np.int64)
        self.leaf = data["t_leaf"].astype(bool)
        self.value = data["t_value"].astype(np.float64)
        self.roots = data["t_roots"].astype(np.int64)
        self.baseline = float(data["t_baseline"])
        self.depth = int(data["t_depth"])

    def logit(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        xs = x.astype(np.float64)
        rows = np.arange(xs.shape[0])[:, None]
        node = np.broadcast_to(self.roots, (xs.shape[0], len(self.roots))).copy()
        for _ in range(self.depth):
            leaf = self.leaf[node]
            if leaf.all():
                break
            go_left = xs[rows, self.feature[node]] <= self.threshold[node]
            nxt = np.where(go_left, self.left[node], self.right[node])
            node = np.where(leaf, node, nxt)
        out: npt.NDArray[np.float64] = self.baseline + self.value[node].sum(axis=1)
        return out


class LearnedVerifier:
    """Gradient-boosted trees (or a small MLP) over pair features.

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
        self._trees: _Trees | None = None
        self.layers: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]] = []
        with np.load(p, allow_pickle=False) as data:
            self.meta: dict[str, Any] = json.loads(str(data["meta"]))
            if self.meta.get("format") != FORMAT:
                raise ConfigError(
                    f"verifier weights at {p} have format {self.meta.get('format')!r}, "
                    f"this version reads {FORMAT!r}",
                    hint="run `python scripts/train_cache_verifier.py` to rebuild them",
                )
            self._embeddings = bool(self.meta.get("embedding_features", False))
            if self.meta.get("kind") == "gbm":
                self._trees = _Trees(data)
            else:
                self.mean = data["mean"].astype(np.float32)
                self.scale = data["scale"].astype(np.float32)
                self.layers = [
                    (data[f"W{i}"].astype(np.float32), data[f"b{i}"].astype(np.float32))
                    for i in range(int(data["n_layers"]))
                ]
        if threshold is None:
            threshold = self._threshold_for(operating_point)
        self.threshold = float(threshold)
        self.path = p

    def _threshold_for(self, operating_point: str) -> float:
        """A recorded point's threshold, or for ``pNN`` (a target precision in percent, e.g.
        ``p93`` or ``p95.5``) the lowest threshold whose calibration hits reached it, read
        from the curve recorded with the weights."""
        points: dict[str, float] = self.meta.get("operating_points", {})
        if operating_point in points:
            return float(points[operating_point])
        known = f"use one of {sorted(points)}, a target precision such as 'p93', or threshold="
        match = _TARGET.fullmatch(operating_point)
        curve: list[list[float]] = self.meta.get("calibration_curve", [])
        if match is None or not curve:
            raise ConfigError(f"unknown verifier operating point {operating_point!r}", hint=known)
        target = float(match.group(1)) / 100.0
        reached = [th for th, precision, _ in curve if precision >= target]
        if not 0.0 < target <= 1.0 or not reached:
            best = max(precision for _, precision, _ in curve)
            raise ConfigError(
                f"no threshold of this verifier reaches {operating_point} "
                f"({target:.1%} precision); the most its calibration data supports is {best:.1%}",
                hint=known,
            )
        return float(min(reached))

    def logit_of(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Log-odds for a matrix of :func:`pair_vector` rows (batch form)."""
        if self._trees is not None:
            return self._trees.logit(features)
        h = ((features - self.mean) / self.scale).astype(np.float64)
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i != last:
                h = np.maximum(h, 0.0)
        out: npt.NDArray[np.float64] = h[:, 0]
        return out

    def probability_of(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Probabilities (float64, so high-confidence scores stay distinct)."""
        logit = self.logit_of(features)
        p = 1.0 / (1.0 + np.exp(-np.clip(logit, -35.0, 35.0)))
        out: npt.NDArray[np.float64] = np.where(vetoed(features), 0.0, p)
        return out

    def probability(self, query: str, cached: str, query_vec: Vector, cached_vec: Vector) -> float:
        x = pair_vector(query, cached, query_vec, cached_vec, embeddings=self._embeddings)[None, :]
        return float(self.probability_of(x)[0])

    def probabilities(
        self, query: str, cached: list[str], query_vec: Vector, cached_vecs: list[Vector]
    ) -> list[float]:
        """One batched pass for several candidates of one query (what a lookup uses)."""
        if not cached:
            return []
        x = np.vstack(
            [
                pair_vector(query, c, query_vec, v, embeddings=self._embeddings)
                for c, v in zip(cached, cached_vecs, strict=True)
            ]
        )
        return [float(p) for p in self.probability_of(x)]

    def verify(self, query: str, cached: str, query_vec: Vector, cached_vec: Vector) -> Verdict:
        p = self.probability(query, cached, query_vec, cached_vec)
        if p >= self.threshold:
            return Verdict(True, p, "accepted")
        return Verdict(False, p, "rejected")
