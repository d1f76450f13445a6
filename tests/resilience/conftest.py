"""Fixtures for resilience tests: fault proxies in front of the real vLLM server, and a
helper that builds a one-step pipeline with a given middleware list over them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

import flowopt
from flowopt.pipeline import Pipeline
from flowopt.testing.faultproxy import FaultProxy
from flowopt.types import Params, Request

GREEDY = Params(temperature=0.0, max_tokens=4)


@pytest_asyncio.fixture
async def proxy(vllm_url: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(vllm_url) as p:
        yield p


@pytest_asyncio.fixture
async def proxy2(vllm_url: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(vllm_url) as p:
        yield p


def chat(text: str = "Say hi", **kw: Any) -> Request:
    kw.setdefault("params", GREEDY)
    return Request.chat(text, **kw)


@pytest.fixture
def make_pipe(served_model: str) -> Callable[..., Pipeline]:
    """``make_pipe(urls, middleware, backends={name: urls})`` -> a pipeline whose default
    backend serves ``served_model`` through ``urls`` (a URL or a list of replicas)."""

    def build(
        urls: str | list[str],
        middleware: list[Any],
        backends: dict[str, Any] | None = None,
        timeout: float = 60.0,
    ) -> Pipeline:
        def vllm(u: str | list[str]) -> dict[str, Any]:
            opts: dict[str, Any] = {"model": served_model, "timeout": timeout}
            if isinstance(u, list):
                opts["base_urls"] = u
            else:
                opts["base_url"] = u
            return {"vllm": opts}

        return flowopt.pipeline(
            "resilience-test",
            backend=vllm(urls),
            backends={k: vllm(v) for k, v in (backends or {}).items()},
            middleware=middleware,
            steps=[
                {
                    "name": "answer",
                    "prompt": "{input}",
                    "params": {"max_tokens": 4, "temperature": 0},
                }
            ],
        )

    return build
