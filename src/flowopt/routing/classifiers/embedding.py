"""The embedding router: similarity-weighted difficulty from labelled examples.

Like RouteLLM's similarity-weighted router: a new prompt is embedded (all-MiniLM-L6-v2,
local) and compared with every labelled training prompt; its ``k`` nearest neighbours vote,
weighted by ``exp(sim / temperature)``, on how often the cheap model got such prompts
wrong, shrunk towards the global rate with ``prior`` pseudo-examples so a prompt with no
close neighbours gets the average, not noise. Score = estimated P(cheap model is wrong).

Training data is JSONL with ``prompt``, ``weak_score`` and ``strong_score`` (0/1), e.g.
``routing-dev.jsonl``; ``flowopt triage train FILE`` writes an ``.npz`` with the
embeddings, labels and settings, loaded here. Why kNN and not a trained classifier: it
needs no tuning beyond ``k``, adapts by adding rows, and on ~3k examples a linear head
overfits (measured in docs/triage.md).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from flowopt.errors import ConfigError
from flowopt.middleware.base import CallNext
from flowopt.routing.classifiers.base import Verdict
from flowopt.types import Request

__all__ = ["EmbeddingRouter"]

Array = npt.NDArray[np.float32]


def _embedder() -> Any:
    from flowopt.cache.embedder import MiniLMEmbedder

    return MiniLMEmbedder()


class EmbeddingRouter:
    """Load with ``EmbeddingRouter.load(path)``; build with :meth:`fit`."""

    name = "embedding"

    def __init__(
        self,
        embeddings: Array,
        weak: Array,
        strong: Array,
        *,
        k: int = 32,
        temperature: float = 0.05,
        prior: float = 4.0,
        embedder: Any = None,
    ) -> None:
        if len(embeddings) != len(weak) or len(weak) != len(strong) or len(weak) == 0:
            raise ConfigError(
                "embedding router: embeddings and labels differ in length or are empty",
                hint="retrain with `flowopt triage train FILE.jsonl`",
            )
        self.embeddings = embeddings.astype(np.float32)
        self.weak = weak.astype(np.float32)
        self.strong = strong.astype(np.float32)
        self.k = min(k, len(weak))
        self.temperature = temperature
        self.prior = prior
        self.base_wrong = float(1.0 - self.weak.mean())
        self._embedder = embedder

    # -- persistence ---------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        prompts: Sequence[str],
        weak: Sequence[float],
        strong: Sequence[float],
        *,
        embedder: Any = None,
        **settings: Any,
    ) -> EmbeddingRouter:
        emb = embedder or _embedder()
        vectors = np.asarray(emb.embed_many(list(prompts)), dtype=np.float32)
        return cls(
            vectors,
            np.asarray(weak, np.float32),
            np.asarray(strong, np.float32),
            embedder=emb,
            **settings,
        )

    def save(self, path: str | Path) -> None:
        meta = {
            "k": self.k,
            "temperature": self.temperature,
            "prior": self.prior,
            "embedder": "all-MiniLM-L6-v2",
            "format": 1,
        }
        np.savez_compressed(
            path,
            embeddings=self.embeddings.astype(np.float16),
            weak=self.weak,
            strong=self.strong,
            meta=np.array(json.dumps(meta)),
        )

    @classmethod
    def load(cls, path: str | Path, *, embedder: Any = None, **overrides: Any) -> EmbeddingRouter:
        p = Path(path)
        if not p.exists():
            raise ConfigError(
                f"embedding router file {p} does not exist",
                hint="create it with `flowopt triage train routing.jsonl --out router.npz`",
            )
        try:
            data = np.load(p, allow_pickle=False)
            meta = json.loads(str(data["meta"]))
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"{p} is not a flowopt router file: {exc}",
                hint="retrain with `flowopt triage train`",
            ) from None
        settings = {k: meta[k] for k in ("k", "temperature", "prior") if k in meta}
        settings.update(overrides)
        return cls(
            data["embeddings"].astype(np.float32),
            data["weak"],
            data["strong"],
            embedder=embedder,
            **settings,
        )

    # -- scoring -------------------------------------------------------------------------------
    def score_vectors(self, queries: Array, *, exclude_self: bool = False) -> Array:
        """P(cheap tier wrong) for each query vector (rows of unit vectors). With
        ``exclude_self`` the query set is the training set (leave-one-out evaluation)."""
        sims = queries @ self.embeddings.T
        if exclude_self:
            np.fill_diagonal(sims, -np.inf)
        k = self.k
        idx = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sims, idx, axis=1)
        w = np.exp((top - top.max(axis=1, keepdims=True)) / self.temperature)
        wrong = 1.0 - self.weak[idx]
        est = (w * wrong).sum(axis=1) + self.prior * self.base_wrong
        scores: Array = (est / (w.sum(axis=1) + self.prior)).astype(np.float32)
        return scores

    def score_texts(self, texts: Sequence[str]) -> Array:
        if self._embedder is None:
            self._embedder = _embedder()
        q = np.asarray(self._embedder.embed_many(list(texts)), dtype=np.float32)
        return self.score_vectors(q)

    async def classify(self, request: Request, call: CallNext | None = None) -> Verdict:
        text = request.last_user_text
        # the forward pass is CPU work (~5 ms): keep it off the event loop
        score = float((await asyncio.to_thread(self.score_texts, [text]))[0])
        return Verdict(score, f"embedding kNN (k={self.k}): P(cheap wrong)={score:.2f}")
