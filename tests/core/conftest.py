"""Fixtures for core unit tests (fakes only: no servers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flowopt.testing import SpanCapture

_capture: SpanCapture | None = None


@pytest.fixture
def spans() -> Iterator[SpanCapture]:
    """An in-memory span capture, emptied for each test."""
    global _capture
    if _capture is None:
        _capture = SpanCapture()
    _capture.clear()
    yield _capture
    _capture.clear()
