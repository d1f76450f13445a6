"""The embedder's onnxruntime path: same vectors as torch, a cached export, fallbacks.

onnxruntime, onnx and tokenizers are declared dependencies of the ``cache`` extra, so
nothing here is skipped when they are missing: that is a failure.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from flowopt.cache import _onnx_export as onnx_export
from flowopt.cache.config import CacheConfig
from flowopt.cache.embedder import MiniLMEmbedder, minilm_path
from flowopt.cache.middleware import CacheMiddleware
from flowopt.cache.stores.memory import MemoryStore
from flowopt.errors import ConfigError, MissingDependencyError

# 100 real QQP pairs committed with the tests (tests/data/README.md says where from).
PAIRS = Path(__file__).resolve().parents[1] / "data" / "qqp-sample.jsonl"
ODD_TEXTS = [
    "",
    "hi",
    "Café naïve résumé — “quoted” ÄÖÜ ß",
    "日本語のテキストと English mixed",
    "emoji 🙂 and tabs\tand\nnewlines",
    "C++ vs. C#: which is better?? $100 @home #1",
    " ".join(["a long question about many different things"] * 60),  # > 256 tokens
]


def _questions(n: int) -> list[str]:
    assert PAIRS.is_file(), f"the test pairs sample is missing: {PAIRS}"
    out: list[str] = []
    with PAIRS.open() as fh:
        for line in fh:
            row = json.loads(line)
            out += [row["a"], row["b"]]
            if len(out) >= n:
                break
    assert len(out) >= n, f"{PAIRS} holds {len(out) // 2} pairs; the tests need {n // 2}"
    return out[:n]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-models")


@pytest.fixture(scope="module")
def onnx_emb(onnx_dir: Path) -> MiniLMEmbedder:
    emb = MiniLMEmbedder(runtime="onnx", onnx_cache_dir=onnx_dir)
    emb.load()
    return emb


@pytest.fixture(scope="module")
def torch_emb() -> MiniLMEmbedder:
    emb = MiniLMEmbedder(runtime="torch")
    emb.load()
    return emb


# -- equivalence --------------------------------------------------------------------------
def test_onnx_vectors_equal_torch_vectors(
    onnx_emb: MiniLMEmbedder, torch_emb: MiniLMEmbedder
) -> None:
    assert onnx_emb.runtime == "onnx" and torch_emb.runtime == "torch"
    assert onnx_emb.identity == torch_emb.identity == "all-MiniLM-L6-v2"
    texts = _questions(50) + ODD_TEXTS
    for text in texts:
        a, b = onnx_emb.embed(text), torch_emb.embed(text)
        assert a.dtype == np.float32 and a.shape == (384,)
        assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-4
        cos = float(a @ b)
        assert cos >= 0.9999, (text, cos)


def test_batches_equal_single_texts_and_torch(
    onnx_emb: MiniLMEmbedder, torch_emb: MiniLMEmbedder
) -> None:
    texts = _questions(70) + ODD_TEXTS  # several batches of 64, padded, one truncated
    got = onnx_emb.embed_many(texts)
    ref = torch_emb.embed_many(texts)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    assert float(np.min(np.sum(got * ref, axis=1))) >= 0.9999
    onnx_emb.forget()
    single = np.stack([onnx_emb.embed(t) for t in texts])  # unpadded
    assert float(np.min(np.sum(got * single, axis=1))) >= 0.9999
    assert onnx_emb.embed_many([]).shape == (0, 384)


def test_fast_tokenizer_gives_transformers_ids(onnx_emb: MiniLMEmbedder) -> None:
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    fast = onnx_emb._engine._tokenizer  # type: ignore[union-attr]
    for text in _questions(200) + ODD_TEXTS:
        want = auto(text, truncation=True, max_length=256)["input_ids"]
        assert fast.encode(text).ids == want, text
    long_ids = fast.encode(ODD_TEXTS[-1]).ids
    assert len(long_ids) == 256 and long_ids[-1] == auto.sep_token_id


def test_token_counts_agree_across_runtimes(
    onnx_emb: MiniLMEmbedder, torch_emb: MiniLMEmbedder
) -> None:
    texts = _questions(20) + ODD_TEXTS
    counts = onnx_emb.count_tokens(texts)
    assert counts == torch_emb.count_tokens(texts)
    assert counts[len(texts) - len(ODD_TEXTS)] == 2  # "": [CLS] [SEP]
    assert counts[-1] == 256  # truncated, as the model reads it
    assert onnx_emb.count_tokens([]) == []


# -- the export cache -----------------------------------------------------------------------
def test_second_load_reuses_the_export(
    onnx_emb: MiniLMEmbedder, onnx_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = list(onnx_dir.glob("*.onnx"))
    assert len(files) == 1 and files[0].name.startswith("all-MiniLM-L6-v2-")
    assert files[0] == onnx_emb._engine.onnx_file  # type: ignore[union-attr]
    assert not list(onnx_dir.glob("*.tmp"))  # temporary files are cleaned up
    mtime = files[0].stat().st_mtime_ns

    def no_export(*_a: object, **_k: object) -> Path:
        raise AssertionError("re-exported although the export exists")

    monkeypatch.setattr(onnx_export, "export_onnx", no_export)
    again = MiniLMEmbedder(runtime="onnx", onnx_cache_dir=onnx_dir)
    again.load()
    assert again.runtime == "onnx"
    assert files[0].stat().st_mtime_ns == mtime
    text = "Is a reused export the same model?"
    assert float(again.embed(text) @ onnx_emb.embed(text)) >= 0.99999


def test_loading_an_existing_export_does_not_import_torch(
    onnx_emb: MiniLMEmbedder, onnx_dir: Path
) -> None:
    code = (
        "import sys\n"
        "from flowopt.cache.embedder import MiniLMEmbedder\n"
        f"e = MiniLMEmbedder(runtime='onnx', onnx_cache_dir={str(onnx_dir)!r})\n"
        "e.load(); e.embed('hello')\n"
        "print(e.runtime, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["onnx", "False", "False"], out.stderr[-2000:]


def _fake_model(root: Path, weights: bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"hidden_size": 384}')
    (root / "model.safetensors").write_bytes(weights)
    return root


def test_export_key_follows_the_model_files(tmp_path: Path) -> None:
    a = _fake_model(tmp_path / "a", b"weights-1")
    b = _fake_model(tmp_path / "b", b"weights-2")
    c = _fake_model(tmp_path / "c", b"weights-1")
    pa, pb, pc = (onnx_export.onnx_export_path(m, cache_dir=tmp_path / "out") for m in (a, b, c))
    assert pa != pb  # other weights: another file
    assert pa == pc  # same contents, other folder: the same export
    (c / "config.json").write_text('{"hidden_size": 768}')
    assert onnx_export.onnx_export_path(c, cache_dir=tmp_path / "out") != pa
    with pytest.raises(FileNotFoundError):
        onnx_export.onnx_export_path(tmp_path, cache_dir=tmp_path / "out")


def test_export_default_dir_is_under_flowopt_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _fake_model(tmp_path / "m", b"w")
    monkeypatch.setenv("FLOWOPT_HOME", str(tmp_path / "home"))
    path = onnx_export.onnx_export_path(model)
    assert path.parent == tmp_path / "home" / "models"


def test_concurrent_first_loads_export_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _fake_model(tmp_path / "m", b"w")
    calls: list[Path] = []

    def slow_export(_model_dir: object, out: Path) -> Path:
        calls.append(out)
        time.sleep(0.3)
        out.write_bytes(b"onnx")
        return out

    monkeypatch.setattr(onnx_export, "export_onnx", slow_export)
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(onnx_export.ensure_onnx(model, cache_dir=tmp_path / "o"))
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and results[0].read_bytes() == b"onnx"


# -- choosing the runtime, and what happens without onnxruntime -----------------------------
def test_runtime_onnx_without_onnxruntime_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    emb = MiniLMEmbedder(runtime="onnx")
    with pytest.raises(MissingDependencyError) as info:
        emb.load()
    assert info.value.module == "onnxruntime"
    assert "flowopt[cache]" in str(info.value)


def test_auto_without_onnxruntime_falls_back_to_torch_silently(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    emb = MiniLMEmbedder()
    assert emb.runtime == "auto"
    with caplog.at_level(logging.WARNING, logger="flowopt.cache.embedder"):
        emb.load()
    assert emb.runtime == "torch"
    assert not caplog.records
    assert emb.embed("still works").shape == (384,)


def test_failed_export_falls_back_with_auto_and_raises_with_onnx(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    def broken(*_a: object, **_k: object) -> Path:
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(onnx_export, "ensure_onnx", broken)
    with caplog.at_level(logging.WARNING, logger="flowopt.cache.embedder"):
        emb = MiniLMEmbedder(onnx_cache_dir=tmp_path)
        emb.load()
    assert emb.runtime == "torch"
    assert any("exporter exploded" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="exporter exploded"):
        MiniLMEmbedder(runtime="onnx", onnx_cache_dir=tmp_path).load()


def test_unknown_runtime_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        MiniLMEmbedder(runtime="tensorflow")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        CacheConfig(embedder_runtime="tensorflow")  # type: ignore[arg-type]


def test_middleware_builds_the_embedder_with_the_configured_runtime() -> None:
    assert CacheConfig().embedder_runtime == "auto"
    mw = CacheMiddleware(
        store=MemoryStore(), model_identity="m@test", embedder_runtime="torch", verify=False
    )
    assert mw.config.embedder_runtime == "torch"
    mw._open()
    assert mw.engine is not None and mw.engine.embedder is not None
    assert mw.engine.embedder.runtime == "torch"  # type: ignore[attr-defined]
