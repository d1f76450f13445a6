"""A one-time ONNX export of the MiniLM embedding model, for onnxruntime.

onnxruntime runs one short question through MiniLM faster than torch's eager forward on
these small CPUs (see docs/cache.md), so the embedder prefers it. There is no ONNX file in
the model package and nothing can be downloaded, so the same weights are exported here,
once per model, with ``torch.onnx.export``:

* The graph takes ``input_ids`` and ``attention_mask`` (int64, dynamic batch and sequence
  axes) and returns the mean-pooled, L2-normalised sentence embedding, so the runtime has
  no post-processing to do. ``token_type_ids`` are zeros inside the graph (one segment).
* onnxruntime's transformer optimizer then fuses the graph offline (attention, embedding
  and skip layer norms, bias GELU: ~280 nodes become ~60), which its online optimizer
  does not do for BERT; ~10% faster for one question. The fusion is hardware-neutral.
* The file lives in the flowopt home (``$FLOWOPT_HOME``, default ``~/.cache/flowopt``)
  under ``models/`` and its name carries a hash of the model's config and weights and of
  this module's export recipe: a different model (or recipe) never reuses a stale export.
* It is written to a temporary file, checked against the torch model on a few texts, and
  moved into place with one rename, under an exclusive file lock: two processes exporting
  at once never see a half-written file, and the second one reuses the first one's work.

Only the export needs torch and transformers; loading an existing export does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from flowopt._filelock import exclusive_lock
from flowopt._progress import no_load_progress
from flowopt.errors import MissingDependencyError

__all__ = [
    "EXPORT_RECIPE",
    "OUTPUT_NAME",
    "ensure_onnx",
    "export_onnx",
    "flowopt_home",
    "model_fingerprint",
    "onnx_export_path",
]

EXPORT_RECIPE = "minilm-meanpool-l2-fused/v1"
"""Part of the export's cache key: change it whenever the exported graph changes."""

OUTPUT_NAME = "sentence_embedding"
INPUT_NAMES = ("input_ids", "attention_mask")

_log = logging.getLogger(__name__)
_FINGERPRINT_FILES = ("config.json",)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_CHECK_TEXTS = (
    "How do I reset my password?",
    "What is the best way to learn machine learning, and which books should I read first?",
    "hi",
)
_MIN_CHECK_COSINE = 0.9999


def flowopt_home() -> Path:
    """flowopt's per-user directory (``$FLOWOPT_HOME``, default ``~/.cache/flowopt``);
    the same rule as :func:`flowopt.local.models.flowopt_home`."""
    env = os.environ.get("FLOWOPT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "flowopt"


def model_fingerprint(model_dir: str | Path) -> str:
    """Hex digest of the model's config and weight files (contents, not dates) and of the
    export recipe. ~0.1 s for MiniLM's 90 MB of weights."""
    root = Path(model_dir)
    files = [root / name for name in _FINGERPRINT_FILES if (root / name).is_file()]
    files += sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in files):
        raise FileNotFoundError(f"no model weights (*.safetensors, *.bin) in {root}")
    h = hashlib.sha256(EXPORT_RECIPE.encode())
    for p in files:
        h.update(b"\0" + p.name.encode() + b"\0")
        with open(p, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def onnx_export_path(
    model_dir: str | Path, name: str = "all-MiniLM-L6-v2", cache_dir: str | Path | None = None
) -> Path:
    """Where the export of ``model_dir`` lives: ``<cache_dir>/<name>-<hash>.onnx``, with
    ``cache_dir`` defaulting to ``$FLOWOPT_HOME/models``."""
    base = Path(cache_dir) if cache_dir is not None else flowopt_home() / "models"
    return base / f"{name}-{model_fingerprint(model_dir)[:16]}.onnx"


def _export_deps() -> tuple[Any, Any]:
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise MissingDependencyError(
            exc.name or "torch", "cache", "exporting the embedding model to ONNX"
        ) from exc
    return torch, AutoModel


def _wrapper(torch: Any, model: Any) -> Any:
    """The transformer plus mean pooling and L2 normalisation, as one module."""

    class MeanPooled(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(out.dtype)
            pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return MeanPooled().eval()


def _run_export(torch: Any, module: Any, sample: tuple[Any, Any], out: Path) -> None:
    """TorchScript-based exporter (``dynamo=False``): ~1 s, no onnxscript needed, and its
    graph is what onnxruntime's CPU attention fusion recognises. The dynamo exporter
    (needs onnxscript, ~6 s) is the fallback should the legacy one fail or be removed."""
    axes = {"batch": 0, "seq": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about is_causal etc. are benign
        try:
            torch.onnx.export(
                module,
                sample,
                str(out),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    INPUT_NAMES[0]: {v: k for k, v in axes.items()},
                    INPUT_NAMES[1]: {v: k for k, v in axes.items()},
                    OUTPUT_NAME: {0: "batch"},
                },
                opset_version=17,
                do_constant_folding=True,
                dynamo=False,
            )
            return
        except Exception as legacy_exc:  # try the other exporter
            legacy: Exception = legacy_exc
        batch = torch.export.Dim("batch")
        seq = torch.export.Dim("seq", max=512)
        try:
            torch.onnx.export(
                module,
                sample,
                str(out),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes={name: {0: batch, 1: seq} for name in INPUT_NAMES},
                opset_version=18,
                external_data=False,
                dynamo=True,
            )
        except Exception as exc:
            raise RuntimeError(
                f"both ONNX exporters failed: legacy: {legacy!r}; dynamo: {exc!r}"
            ) from exc


def _check_export(torch: Any, module: Any, tokenizer: Any, onnx_file: Path) -> float:
    """Smallest cosine between torch and onnxruntime embeddings of a few texts, padded
    batch included; raises when the export does not reproduce the model."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    batch = tokenizer(
        list(_CHECK_TEXTS), padding=True, truncation=True, max_length=256, return_tensors="pt"
    )
    with torch.inference_mode():
        ref = module(batch["input_ids"], batch["attention_mask"]).numpy()
    got = sess.run(
        [OUTPUT_NAME],
        {
            "input_ids": batch["input_ids"].numpy().astype(np.int64),
            "attention_mask": batch["attention_mask"].numpy().astype(np.int64),
        },
    )[0]
    worst = float(np.min(np.sum(ref * got, axis=1)))
    if not worst >= _MIN_CHECK_COSINE:
        raise RuntimeError(
            f"the ONNX export of the embedding model disagrees with torch (cosine {worst:.6f})"
        )
    return worst


def _fuse(src: Path, dst: Path, model_dir: Path) -> bool:
    """Write ``src`` fused by onnxruntime's BERT optimizer to ``dst``; False (and nothing
    written) when the optimizer is unavailable or fails, the unfused graph then serves."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        config = json.loads((model_dir / "config.json").read_text())
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            fused = optimize_model(
                str(src),
                model_type="bert",
                num_heads=int(config["num_attention_heads"]),
                hidden_size=int(config["hidden_size"]),
                opt_level=0,  # transformer fusions only: no hardware-specific rewrites
            )
            fused.save_model_to_file(str(dst), use_external_data_format=False)
    except Exception as exc:
        _log.info("onnx export: the transformer fusion was skipped (%r)", exc)
        return False
    return True


def export_onnx(model_dir: str | Path, out: str | Path) -> Path:
    """Export the model at ``model_dir`` to ``out`` (atomically, checked against torch).

    Needs torch, transformers, onnx and onnxruntime. Overwrites ``out`` if it exists.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch, auto_model = _export_deps()
    from transformers import AutoTokenizer

    # Eager attention: the plain MatMul/Softmax pattern that onnxruntime's optimizer fuses
    # into its Attention kernel (it does not recognise the SDPA export's pattern).
    with no_load_progress():
        model = auto_model.from_pretrained(
            str(model_dir), local_files_only=True, attn_implementation="eager"
        )
    module = _wrapper(torch, model.eval())
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    sample = tokenizer(
        ["a sample question for tracing", "short"],
        padding=True,
        truncation=True,
        max_length=256,
        return_tensors="pt",
    )
    sample_args = (sample["input_ids"], sample["attention_mask"])
    raw = _temp_path(out)
    fused = _temp_path(out)
    try:
        with torch.inference_mode(False), torch.no_grad():
            _run_export(torch, module, sample_args, raw)
        final = raw
        if _fuse(raw, fused, Path(model_dir)):
            try:
                _check_export(torch, module, tokenizer, fused)
                final = fused
            except Exception as exc:
                _log.warning("onnx export: the fused graph was rejected (%s)", exc)
        if final is raw:
            _check_export(torch, module, tokenizer, raw)
        os.chmod(final, 0o644)
        os.replace(final, out)
    finally:
        raw.unlink(missing_ok=True)
        fused.unlink(missing_ok=True)
    return out


def _temp_path(out: Path) -> Path:
    """A fresh, unique temporary file next to ``out`` (same file system: rename is atomic)."""
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    return Path(name)


def ensure_onnx(
    model_dir: str | Path, name: str = "all-MiniLM-L6-v2", cache_dir: str | Path | None = None
) -> Path:
    """The path of the ONNX export of ``model_dir``, exporting it first if needed (once:
    concurrent callers, threads or processes, wait for the first and reuse its file)."""
    path = onnx_export_path(model_dir, name, cache_dir)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_name(path.name + ".lock")):
        if not path.is_file():
            export_onnx(model_dir, path)
    return path
