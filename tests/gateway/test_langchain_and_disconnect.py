"""LangChain's ChatOpenAI through the gateway, and client disconnects cancelling vLLM work."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from langchain_openai import ChatOpenAI
from tests.gateway.gateway_live import LiveGateway, TcpRelay

from flowopt import pipeline
from flowopt.gateway._background import BackgroundServer
from flowopt.gateway.app import create_app

pytestmark = pytest.mark.integration


def _chat(gw: LiveGateway) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=gw.base_url + "/v1",
        api_key=gw.api_key,
        model=gw.model,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
        max_retries=0,  # type: ignore[call-arg]
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


@pytest.fixture
def relayed_gateway(vllm_url: str, served_model: str) -> Iterator[tuple[str, TcpRelay]]:
    """A gateway whose vLLM connection runs through a TCP relay that reports hang-ups."""
    parts = urlsplit(vllm_url)
    relay = TcpRelay(parts.hostname or "127.0.0.1", parts.port or 80).start()
    pipe = pipeline(
        "relayed",
        backend={"vllm": {"base_url": f"http://127.0.0.1:{relay.port}", "model": served_model}},
        steps=[{"name": "answer", "prompt": "{input}"}],
    )
    with BackgroundServer(create_app(pipe)) as server:
        yield server.base_url, relay


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_the_backend_request(
    relayed_gateway: tuple[str, TcpRelay], served_model: str, stream: bool
) -> None:
    base_url, relay = relayed_gateway
    body = {
        "model": served_model,
        "messages": [{"role": "user", "content": "Count to one thousand."}],
        # ~40 s of generation if nobody stops it; the test ends long before.
        "max_tokens": 1500,
        "ignore_eos": True,
        "stream": stream,
        "temperature": 0,
    }
    with httpx.Client(timeout=60) as c:
        if stream:
            with c.stream("POST", base_url + "/v1/chat/completions", json=body) as resp:
                assert resp.status_code == 200
                for line in resp.iter_lines():
                    if re.search(r'"content":"[^"]+"', line):
                        break  # a real token arrived: generation runs; now hang up
        else:
            # A JSON call gives no sign of progress; give up on it from the client side.
            with pytest.raises(httpx.ReadTimeout):
                c.post(base_url + "/v1/chat/completions", json=body, timeout=1.0)
    assert relay.gateway_hung_up.wait(30), "the gateway kept the vLLM request running"
    assert not relay.upstream_finished.is_set()
    gone = _metric(
        httpx.get(base_url + "/metrics").text, "flowopt_gateway_client_disconnects_total"
    )
    assert gone == 1
