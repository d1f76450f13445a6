"""Fixtures for routing tests: a cheap and a strong tier as two backends (on this CPU both
are the same small model, reached through the two fault proxies of the top-level
``tests/conftest.py`` so each tier's traffic is counted separately), and a slice of the
labelled routing data committed in ``tests/data``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowopt.pipeline import Pipeline
from flowopt.testing.faultproxy import FaultProxy

# 240 real labelled rows (tests/data/README.md says where from and what was dropped).
ROUTING_DATA = Path(__file__).resolve().parents[1] / "data" / "routing-sample.jsonl"
ROUTING_ROWS = 240
PRICES = {
    "cheap": {"input_per_1k": 0.0001, "output_per_1k": 0.0002},
    "strong": {"input_per_1k": 0.003, "output_per_1k": 0.006},
}
TIERS = [
    {"name": "cheap", "backend": "default", "price": PRICES["cheap"]},
    {"name": "strong", "backend": "strong", "price": PRICES["strong"]},
]


@pytest.fixture
def cheap_proxy(proxy: FaultProxy) -> FaultProxy:
    """The cheap tier's fault proxy (the default backend)."""
    return proxy


@pytest.fixture
def strong_proxy(proxy2: FaultProxy) -> FaultProxy:
    """The strong tier's fault proxy (the ``strong`` backend)."""
    return proxy2


@pytest.fixture
def tiered(
    make_pipe: Callable[..., Pipeline], cheap_proxy: FaultProxy, strong_proxy: FaultProxy
) -> Callable[..., Pipeline]:
    def build(middleware: list[Any], max_tokens: int = 4) -> Pipeline:
        return make_pipe(
            cheap_proxy.url,
            middleware,
            backends={"strong": strong_proxy.url},
            timeout=None,
            max_tokens=max_tokens,
            name="routing-test",
        )

    return build


@pytest.fixture(scope="session")
def routing_rows() -> list[dict[str, Any]]:
    """The 240 rows of routing-sample.jsonl (real labelled data: the first 240 rows of the
    routing dev file, a slice for speed)."""
    with ROUTING_DATA.open() as f:
        rows = [json.loads(line) for line in f if line.strip()]
    assert len(rows) == ROUTING_ROWS, f"{ROUTING_DATA} has {len(rows)} rows, not {ROUTING_ROWS}"
    return rows
