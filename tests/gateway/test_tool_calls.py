"""Tool calls through ``flowopt serve`` with the official ``openai`` client, against the real
local Qwen server (hermes tool parser): JSON and streamed, both directions.

The strongest check is differential: the same conversation sent to vLLM directly and
through the gateway must reach the engine as the same prompt (same ``prompt_tokens``) and
come back with the same tool calls. A probe middleware records what reached the stack, so
a dropped ``tool_call_id`` or ``tool_calls`` would show even if the model did not care.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from openai import OpenAI

from flowopt import pipeline
from flowopt.gateway._background import BackgroundServer
from flowopt.gateway.app import create_app
from flowopt.middleware.base import CallNext, MiddlewareBase
from flowopt.types import Request, Response

pytestmark = pytest.mark.integration

QWEN = "qwen0.5b"
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for one city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


class Recorder(MiddlewareBase):
    """Keeps every request that reached the stack (real middleware, no fake backend)."""

    name: ClassVar[str] = "recorder"

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        self.requests.append(request)
        return await call_next(request)


@pytest.fixture(scope="module")
def gw(qwen_url: str) -> Iterator[tuple[OpenAI, OpenAI, Recorder]]:
    recorder = Recorder()
    pipe = pipeline(
        "agent",
        backend={"vllm": {"base_url": qwen_url, "model": QWEN}},
        middleware=[recorder],
        steps=[{"name": "answer", "prompt": "{input}"}],
    )
    with BackgroundServer(create_app(pipe)) as server:
        via = OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)
        direct = OpenAI(base_url=f"{qwen_url}/v1", api_key="none", max_retries=0)
        yield via, direct, recorder


def _call(client: OpenAI, messages: list[dict[str, Any]], **kw: Any) -> Any:
    return client.chat.completions.create(
        model=QWEN, messages=messages, temperature=0, max_tokens=40, **kw
    )  # type: ignore[call-overload]


def _streamed(client: OpenAI, messages: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    """Consume a stream as an OpenAI client would: tool-call deltas joined by index."""
    calls: dict[int, dict[str, str]] = {}
    text, finish, usage = "", None, None
    for chunk in _call(client, messages, stream=True, stream_options={"include_usage": True}, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        finish = choice.finish_reason or finish
        for d in choice.delta.tool_calls or []:
            slot = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] = d.id or slot["id"]
            if d.function is not None:
                slot["name"] = d.function.name or slot["name"]
                slot["arguments"] += d.function.arguments or ""
    return {"text": text, "finish": finish, "calls": calls, "usage": usage}


def test_tool_call_round_trip_json(gw: tuple[OpenAI, OpenAI, Recorder]) -> None:
    via, direct, recorder = gw
    first = _call(via, ASK, tools=[WEATHER], tool_choice=NAMED)
    ref = _call(direct, ASK, tools=[WEATHER], tool_choice=NAMED)
    msg = first.choices[0].message
    assert msg.tool_calls, "the gateway dropped the tool calls"
    call = msg.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == json.loads(
        ref.choices[0].message.tool_calls[0].function.arguments
    )
    assert first.usage.prompt_tokens == ref.usage.prompt_tokens  # tools reached the engine

    # The result goes back as a tool message; the model answers in text.
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees Celsius."},
    ]
    final = _call(via, history, tools=[WEATHER])
    final_ref = _call(direct, history, tools=[WEATHER])
    assert final.choices[0].message.content == final_ref.choices[0].message.content
    assert final.usage.prompt_tokens == final_ref.usage.prompt_tokens  # nothing stripped
    # (what the 0.5B model answers after a tool result is often poor; the gateway must
    # only make it answer exactly what it answers directly)
    seen = recorder.requests[-1]
    assert seen.messages[1].tool_calls[0].id == call.id
    assert seen.messages[2].tool_call_id == call.id
    assert seen.tools and seen.tools[0]["function"]["name"] == "get_weather"


def test_tool_call_streamed_matches_json(gw: tuple[OpenAI, OpenAI, Recorder]) -> None:
    via, direct, _ = gw
    streamed = _streamed(via, ASK, tools=[WEATHER], tool_choice="required")
    ref = _streamed(direct, ASK, tools=[WEATHER], tool_choice="required")
    assert streamed["finish"] == ref["finish"] == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in streamed["calls"].values()] == [
        (c["name"], json.loads(c["arguments"])) for c in ref["calls"].values()
    ]
    assert all(c["id"] for c in streamed["calls"].values())
    assert streamed["usage"].prompt_tokens == ref["usage"].prompt_tokens


def test_parallel_tool_calls_in_history_reach_the_engine(
    gw: tuple[OpenAI, OpenAI, Recorder],
) -> None:
    """Two calls in one assistant turn, two tool results: the engine sees all of them
    (the same prompt tokens as direct), streamed, and the model can answer from both."""
    via, direct, recorder = gw
    history = [
        {"role": "user", "content": "Weather in Oslo and in Bern?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Bern"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "Oslo: 3 C, snow"},
        {"role": "tool", "tool_call_id": "call_b", "content": "Bern: 7 C, rain"},
    ]
    streamed = _streamed(via, history, tools=[WEATHER], parallel_tool_calls=True)
    ref = _streamed(direct, history, tools=[WEATHER], parallel_tool_calls=True)
    assert streamed["text"] == ref["text"]
    assert streamed["usage"].prompt_tokens == ref["usage"].prompt_tokens
    assert recorder.requests[-1].parallel_tool_calls is True
    assert [m.tool_call_id for m in recorder.requests[-1].messages[2:]] == ["call_a", "call_b"]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (
            [*ASK, {"role": "tool", "tool_call_id": "nope", "content": "x"}],
            "messages[1].tool_call_id",
        ),
        ([*ASK, {"role": "tool", "content": "x"}], "messages[1].tool_call_id"),
        (
            [
                *ASK,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}
                    ],
                },
            ],
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            [*ASK, {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}],
            "messages[1].tool_calls[0]",
        ),
        ([{"role": "user", "content": None}], "messages[0].content"),
    ],
)
def test_bad_tool_messages_get_openai_400s(
    gw: tuple[OpenAI, OpenAI, Recorder], messages: list[dict[str, Any]], param: str
) -> None:
    import openai

    via, _, _ = gw
    with pytest.raises(openai.BadRequestError) as err:
        _call(via, messages, tools=[WEATHER])
    body = err.value.body
    assert isinstance(body, dict)
    assert body["param"] == param, body
