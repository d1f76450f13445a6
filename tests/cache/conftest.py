"""Fixtures of the cache tests. Fakes (``fakes.py``) serve the unit tests only; the
integration tests use the real embedder, verifier, servers and pipeline."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def minilm() -> object:
    """The real MiniLM embedder, loaded once per session."""
    from flowopt.cache.embedder import MiniLMEmbedder

    emb = MiniLMEmbedder()
    emb.load()
    return emb


@pytest.fixture(scope="session")
def verifier() -> object:
    from flowopt.cache.verifier import LearnedVerifier

    return LearnedVerifier()


@pytest.fixture(scope="session")
def _span_capture() -> object:
    from flowopt.testing.spans import SpanCapture

    return SpanCapture()


@pytest.fixture()
def spans(_span_capture: object) -> Iterator[object]:
    """Finished spans of this test only (one capture per session: OTel allows one
    global provider)."""
    _span_capture.clear()  # type: ignore[attr-defined]
    yield _span_capture
    _span_capture.clear()  # type: ignore[attr-defined]
