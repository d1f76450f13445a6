"""`flowopt serve` freezes the heap its start-up built (``gc.freeze``), so the collector
no longer walks it; an app made with ``create_app`` and run by someone else's server
leaves that process's collector alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from flowopt import pipeline
from flowopt.gateway.app import create_app
from flowopt.gateway.server import _own_process
from flowopt.pipeline import Pipeline
from flowopt.testing import FakeBackend


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # give the test process its collector back


def _pipe() -> Pipeline:
    return pipeline("frozen", backend=FakeBackend(), steps=[{"name": "a", "prompt": "{input}"}])


def test_serve_freezes_the_start_up_heap() -> None:
    app = _own_process(create_app(_pipe()))
    assert gc.get_freeze_count() == 0
    with TestClient(app) as client:  # runs the lifespan: start-up, then requests
        assert gc.get_freeze_count() > 10_000
        assert client.get("/health").status_code == 200


def test_an_embedded_app_leaves_the_collector_alone() -> None:
    with TestClient(create_app(_pipe())) as client:
        assert client.get("/health").status_code == 200
        assert gc.get_freeze_count() == 0
