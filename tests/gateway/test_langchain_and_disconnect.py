"""LangChain's ChatOpenAI through the gateway, and client disconnects cancelling vLLM work."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import pytest
from langchain_openai import ChatOpenAI
from tests.gateway.gateway_live import LiveGateway

pytestmark = pytest.mark.integration


def _chat(gw: LiveGateway) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=gw.base_url + "/v1", api_key=gw.api_key, model=gw.model,  # type: ignore[arg-type]
        max_tokens=8, temperature=0, max_retries=0,  # type: ignore[call-arg]
    )


def test_langchain_invoke(live_gateway: LiveGateway) -> None:
    msg = _chat(live_gateway).invoke("Name a fruit.")
    assert isinstance(msg.content, str) and msg.content
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] >= 1


def test_langchain_stream(live_gateway: LiveGateway) -> None:
    pieces = [c.content for c in _chat(live_gateway).stream("Name a fruit.")]
    assert "".join(str(p) for p in pieces)


async def test_langchain_ainvoke(live_gateway: LiveGateway) -> None:
    msg = await _chat(live_gateway).ainvoke("Name a fruit.")
    assert msg.content


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll an observable condition (not a fixed sleep): fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def test_client_disconnect_aborts_the_vllm_request(live_gateway: LiveGateway, vllm_url: str) -> None:
    def aborted() -> float:
        text = httpx.get(vllm_url + "/metrics").text
        return _metric(text, "vllm:request_success_total", finished_reason="abort")

    def disconnects() -> float:
        text = httpx.get(live_gateway.base_url + "/metrics").text
        return _metric(text, "flowopt_gateway_client_disconnects_total")

    aborts_before, gone_before = aborted(), disconnects()
    body = {
        "model": live_gateway.model,
        "messages": [{"role": "user", "content": "Count to one thousand."}],
        "max_tokens": 1500, "ignore_eos": True, "stream": True, "temperature": 0,
    }
    headers = {"authorization": f"Bearer {live_gateway.api_key}"}
    with httpx.Client(timeout=60) as c, c.stream(
        "POST", live_gateway.base_url + "/v1/chat/completions", json=body, headers=headers
    ) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if re.search(r'"content":"[^"]+"', line):
                break  # one real token arrived: generation is running; now hang up
    # 1500 tokens at ~40 tok/s would run for ~40 s; the abort shows up well before.
    _wait_until(lambda: disconnects() > gone_before, 30, "the gateway to see the disconnect")
    _wait_until(lambda: aborted() > aborts_before, 30, "vLLM to abort the request")
