"""Passage ranking for the coarse step: which passages to keep whole, which to drop.

LongLLMLingua ranks passages by the perplexity of the question given each passage, with
the same small LM that scores tokens (``ranker: lm``). With a 135M scorer that signal is
weak: on NQ-20 it dropped the gold passage where a sentence embedder keeps it (the dev
baseline: all-MiniLM-L6-v2 cosine keeps a gold answer for 99.8% of questions at 3.3x).
So the default ranker is :class:`MiniLMRanker` — flowopt's cache embedder, already
installed and loaded offline — and the LM ranker remains an option.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

__all__ = ["MiniLMRanker", "Ranker"]


class Ranker(Protocol):
    """Scores passages for a question (higher: keep first)."""

    def __call__(self, passages: list[str], question: str) -> list[float]: ...


class MiniLMRanker:
    """Cosine of all-MiniLM-L6-v2 embeddings of the question and each passage."""

    def __init__(self, embedder: Any = None) -> None:
        self._embedder = embedder

    def __call__(self, passages: list[str], question: str) -> list[float]:
        if self._embedder is None:
            from flowopt.cache.embedder import MiniLMEmbedder

            self._embedder = MiniLMEmbedder(threads=1)
        vecs = np.asarray(self._embedder.embed_many(passages))
        q = np.asarray(self._embedder.embed(question))
        return [float(x) for x in vecs @ q]
