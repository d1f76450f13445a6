"""Every message shape OpenAI's chat API documents goes through the gateway and reaches the
backend as sent; streamed tool-call deltas of parallel calls are re-emitted so the official
client joins them.

The backend is the real ``VLLMBackend`` over ``httpx.MockTransport`` (a fake transport that
records the exact JSON body the backend would send to vLLM), because a real server does
not echo what it received; the same paths run against the real Qwen server in
test_tool_calls.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI

from flowopt import VLLMBackend, pipeline
from flowopt.gateway._background import BackgroundServer
from flowopt.gateway.app import create_app

MODELS = {"data": [{"id": "m", "root": "/models/m", "max_model_len": 2048}]}
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        "strict": True,
    },
}

# One of each shape in OpenAI's ChatCompletionMessageParam union (the deprecated
# `function` role excepted: it is refused with a 400, see below).
EVERY_SHAPE: list[dict[str, Any]] = [
    {"role": "system", "content": "sys text", "name": "policy"},
    {"role": "system", "content": [{"type": "text", "text": "sys part"}]},
    {"role": "developer", "content": "dev text"},
    {"role": "developer", "content": [{"type": "text", "text": "dev part"}]},
    {"role": "user", "content": "plain", "name": "alice"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "look at this"},
            {
                "type": "image_url",
                "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
            },
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "file", "file": {"file_id": "file-1", "filename": "a.pdf"}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q":"a"}'},
            },
            {
                "id": "c2",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q":"b"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "result a"},
    {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "result b"}]},
    {
        "role": "assistant",
        "content": [{"type": "text", "text": "partial"}, {"type": "refusal", "refusal": "no"}],
        "refusal": None,
        "name": "bot",
        "audio": {"id": "audio-1"},
    },
    {"role": "assistant", "content": "plain answer", "reasoning_content": "thought"},
    {"role": "user", "content": "and now?"},
]


def _sse(events: list[Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + (
        b"data: [DONE]\n\n"
    )


def _delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "x",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


PARALLEL_STREAM = [
    _delta({"role": "assistant", "content": ""}),
    _delta(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "ca",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": ""},
                }
            ]
        }
    ),
    _delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}),
    _delta(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "cb",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q":'},
                }
            ]
        }
    ),
    _delta({"tool_calls": [{"index": 0, "function": {"arguments": ' "a"}'}}]}),
    _delta({"tool_calls": [{"index": 1, "function": {"arguments": ' "b"}'}}]}),
    _delta({}, "tool_calls"),
    {
        "id": "x",
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 12},
    },
]


class Recording:
    """The fake transport's handler: records bodies, answers a tool call."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/models"):
            return httpx.Response(200, json=MODELS)
        body = json.loads(req.content)
        self.bodies.append(body)
        if body.get("stream"):
            return httpx.Response(
                200, content=_sse(PARALLEL_STREAM), headers={"content-type": "text/event-stream"}
            )
        message = {
            "role": "assistant",
            "content": None,
            "reasoning_content": "because",
            "tool_calls": [
                {
                    "id": "ca",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "a"}'},
                }
            ],
        }
        return httpx.Response(
            200,
            json={
                "id": "x",
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 5},
            },
        )


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[OpenAI, Recording]]:
    rec = Recording()
    backend = VLLMBackend("http://fake-vllm:8000/v1", model="m", transport=httpx.MockTransport(rec))
    pipe = pipeline("shapes", backend=backend, steps=[{"name": "a", "prompt": "{input}"}])
    with BackgroundServer(create_app(pipe)) as server:
        yield OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0), rec


def test_every_message_shape_reaches_the_backend_as_sent(
    gateway: tuple[OpenAI, Recording],
) -> None:
    client, rec = gateway
    out = client.chat.completions.create(
        model="m",
        messages=EVERY_SHAPE,  # type: ignore[arg-type]
        tools=[TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "lookup"}},
        parallel_tool_calls=False,
    )
    sent = rec.bodies[-1]
    assert sent["messages"] == EVERY_SHAPE
    assert sent["tools"] == [TOOL]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert sent["parallel_tool_calls"] is False
    msg = out.choices[0].message
    assert out.choices[0].finish_reason == "tool_calls"
    assert msg.content is None
    assert msg.tool_calls is not None and msg.tool_calls[0].id == "ca"
    assert msg.tool_calls[0].function.arguments == '{"q": "a"}'
    assert (msg.model_extra or {}).get("reasoning_content") == "because"


def test_parallel_tool_call_deltas_are_rejoined_by_the_client(
    gateway: tuple[OpenAI, Recording],
) -> None:
    client, _ = gateway
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "two"}],
        tools=[TOOL],
        stream=True,  # type: ignore[list-item]
    ):
        for d in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            slot = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] += d.id or ""
            slot["name"] += (d.function.name or "") if d.function else ""
            slot["arguments"] += (d.function.arguments or "") if d.function else ""
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert finish == "tool_calls"
    assert calls == {
        0: {"id": "ca", "name": "lookup", "arguments": '{"q": "a"}'},
        1: {"id": "cb", "name": "lookup", "arguments": '{"q": "b"}'},
    }


async def test_streamed_tool_calls_assemble_in_the_backend() -> None:
    rec = Recording()
    backend = VLLMBackend("http://fake-vllm:8000/v1", model="m", transport=httpx.MockTransport(rec))
    from flowopt import Request

    resp = await backend.generate(Request.chat("two", stream=True, tools=[TOOL]))
    final = await resp.complete()
    await backend.aclose()
    assert final.finish_reason == "tool_calls" and final.usage.output_tokens == 12
    assert [(c.id, c.name, c.parsed_arguments()) for c in final.tool_calls] == [
        ("ca", "lookup", {"q": "a"}),
        ("cb", "lookup", {"q": "b"}),
    ]


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "function", "name": "f", "content": "x"}, "messages[0].role"),
        ({"role": "user", "content": [{"type": "image_url"}]}, "messages[0].content[0].image_url"),
        ({"role": "user", "content": [{"text": "no type"}]}, "messages[0].content[0]"),
        ({"role": "user", "content": 42}, "messages[0].content"),
        ({"role": "user", "content": "x", "tool_calls": []}, None),  # empty list is fine
    ],
)
def test_malformed_messages_name_the_field(
    gateway: tuple[OpenAI, Recording], message: dict[str, Any], param: str | None
) -> None:
    import openai

    client, _ = gateway
    if param is None:
        client.chat.completions.create(model="m", messages=[message])  # type: ignore[list-item]
        return
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="m", messages=[message])  # type: ignore[list-item]
    assert isinstance(err.value.body, dict) and err.value.body["param"] == param
