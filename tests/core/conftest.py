"""Fixtures for core unit tests (fakes only: no servers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from flowopt import VLLMBackend
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


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., VLLMBackend]]:
    """``make(url, **options)``: VLLMBackends (model ``m``) closed at the end of the test
    (aiohttp warns about sessions left open)."""
    made: list[VLLMBackend] = []

    def build(url: str, **kw: object) -> VLLMBackend:
        made.append(VLLMBackend(url, model="m", **kw))  # type: ignore[arg-type]
        return made[-1]

    yield build
    for b in made:
        await b.aclose()
