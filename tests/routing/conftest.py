"""Fixtures for routing tests: a cheap and a strong tier as two backends (on this CPU both
are the same small model, reached through two fault proxies so each tier's traffic is
counted separately), and a small slice of the labelled routing data."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import flowopt
from flowopt.pipeline import Pipeline
from flowopt.testing.faultproxy import FaultProxy

ROUTING_DATA = Path("/work/shared/data/routing-dev.jsonl")
PRICES = {
    "cheap": {"input_per_1k": 0.0001, "output_per_1k": 0.0002},
    "strong": {"input_per_1k": 0.003, "output_per_1k": 0.006},
}
TIERS = [
    {"name": "cheap", "backend": "default", "price": PRICES["cheap"]},
    {"name": "strong", "backend": "strong", "price": PRICES["strong"]},
]


@pytest_asyncio.fixture
async def cheap_proxy(vllm_url: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(vllm_url) as p:
        yield p


@pytest_asyncio.fixture
async def strong_proxy(vllm_url: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(vllm_url) as p:
        yield p


@pytest.fixture
def tiered(
    served_model: str, cheap_proxy: FaultProxy, strong_proxy: FaultProxy
) -> Callable[..., Pipeline]:
    def build(middleware: list[Any], max_tokens: int = 4) -> Pipeline:
        return flowopt.pipeline(
            "routing-test",
            backend={"vllm": {"base_url": cheap_proxy.url, "model": served_model}},
            backends={"strong": {"vllm": {"base_url": strong_proxy.url, "model": served_model}}},
            middleware=middleware,
            steps=[
                {
                    "name": "answer",
                    "prompt": "{input}",
                    "params": {"max_tokens": max_tokens, "temperature": 0},
                }
            ],
        )

    return build


@pytest.fixture(scope="session")
def routing_rows() -> list[dict[str, Any]]:
    """The first 240 rows of routing-dev.jsonl (the real labelled data, a slice for speed)."""
    rows = []
    with ROUTING_DATA.open() as f:
        for line in f:
            rows.append(json.loads(line))
            if len(rows) == 240:
                break
    return rows
