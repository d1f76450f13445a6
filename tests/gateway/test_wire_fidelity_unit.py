"""Wire fidelity without a server: the real VLLMBackend over ``httpx.MockTransport`` fed
with bodies recorded from vLLM 0.32, behind the real gateway app. What the engine sends
(errors, fields flowopt does not model, model metadata, several choices) must reach the
client as the engine wrote it. The same checks against the live engine are in
``test_differential.py``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from flowopt import pipeline
from flowopt.backends.vllm import VLLMBackend
from flowopt.gateway.app import create_app
from flowopt.types import Request

URL = "http://fake-vllm:8000"
MODELS: dict[str, Any] = {
    "object": "list",
    "data": [
        {
            "id": "m",
            "object": "model",
            "created": 1,
            "owned_by": "vllm",
            "root": "/models/m",
            "parent": None,
            "max_model_len": 4096,
            "permission": [{"id": "modelperm-1", "object": "model_permission"}],
        }
    ],
}
Handler = Callable[[httpx.Request], httpx.Response]


def _engine(answer: Handler) -> Handler:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v1/models":
            return httpx.Response(200, json=MODELS)
        return answer(req)

    return handler


def _gateway(answer: Handler) -> httpx.AsyncClient:
    backend = VLLMBackend(URL, model="m", transport=httpx.MockTransport(_engine(answer)))
    pipe = pipeline("unit", backend=backend, steps=[{"name": "answer", "prompt": "{input}"}])
    app = create_app(pipe)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
async def test_engine_4xx_reaches_the_caller_as_the_engine_wrote_it(stream: bool) -> None:
    engine_error = {
        "message": "max_tokens=100000 cannot be greater than max_model_len=4096.",
        "type": "BadRequestError",
        "param": "max_tokens",
        "code": 400,
        "extra_field": {"kept": True},
    }

    def answer(req: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": engine_error})

    async with _gateway(answer) as c:
        resp = await c.post("/v1/chat/completions", json={**ASK, "stream": stream})
    assert resp.status_code == 400
    assert resp.json() == {"error": engine_error}
    assert resp.headers["x-flowopt-error-source"] == "engine"


async def test_engine_429_keeps_its_body_and_retry_after() -> None:
    def answer(req: httpx.Request) -> httpx.Response:
        err = {"message": "slow down", "type": "RateLimitError", "param": None, "code": 429}
        return httpx.Response(429, json={"error": err}, headers={"retry-after": "2"})

    async with _gateway(answer) as c:
        resp = await c.post("/v1/chat/completions", json=ASK)
    assert resp.status_code == 429 and resp.headers["retry-after"] == "2"
    assert resp.json()["error"]["code"] == 429 and resp.json()["error"]["message"] == "slow down"


async def test_engine_error_without_an_error_object_is_flowopts_backend_rejected() -> None:
    async with _gateway(lambda req: httpx.Response(422, text="no")) as c:
        resp = await c.post("/v1/chat/completions", json=ASK)
    assert resp.status_code == 422
    assert resp.json()["error"] == {
        "message": "no",
        "type": "invalid_request_error",
        "param": None,
        "code": "backend_rejected",
    }
    assert resp.headers["x-flowopt-error-source"] == "flowopt"


async def test_engine_5xx_and_404_are_flowopts_502() -> None:
    """A 5xx is the engine's health and a 404 flowopt's configuration: not the caller's to
    fix, so flowopt answers (and hides the engine's internals)."""
    for status in (500, 404):

        def answer(req: httpx.Request, status: int = status) -> httpx.Response:
            return httpx.Response(status, json={"error": {"message": "internal /secret/path"}})

        async with _gateway(answer) as c:
            resp = await c.post("/v1/chat/completions", json=ASK)
        assert resp.status_code == 502
        assert resp.json()["error"]["code"] == "backend_http_error"
        assert "secret" not in resp.text
        assert resp.headers["x-flowopt-error-source"] == "flowopt"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": 7}, "temperature"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"logprobs": True, "top_logprobs": 50}, "top_logprobs"),
    ],
)
async def test_flowopts_own_checks_name_the_param_as_the_engine_would(
    body: dict[str, Any], param: str
) -> None:
    def answer(req: httpx.Request) -> httpx.Response:
        raise AssertionError("flowopt refuses these before the engine")

    async with _gateway(answer) as c:
        resp = await c.post("/v1/chat/completions", json={**ASK, **body})
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert (err["param"], err["code"], err["type"]) == (
        param,
        "invalid_request",
        "invalid_request_error",
    )
    assert resp.headers["x-flowopt-error-source"] == "flowopt"


async def test_completion_logprobs_over_the_limit_names_logprobs() -> None:
    def answer(req: httpx.Request) -> httpx.Response:
        raise AssertionError("flowopt refuses this before the engine")

    async with _gateway(answer) as c:
        resp = await c.post("/v1/completions", json={"model": "m", "prompt": "p", "logprobs": 50})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "logprobs"


# -- fields flowopt does not model ---------------------------------------------------------
def _chat_body(n: int = 1) -> dict[str, Any]:
    """A vLLM 0.32 chat answer as recorded (every field it sends)."""
    return {
        "id": "chatcmpl-a0cb",
        "object": "chat.completion",
        "created": 1796204675,
        "model": "m",
        "choices": [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": f"Hello {i}",
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "reasoning": None,
                },
                "logprobs": None,
                "finish_reason": "length",
                "stop_reason": None,
                "token_ids": None,
                "routed_experts": None,
            }
            for i in range(n)
        ],
        "service_tier": None,
        "system_fingerprint": "vllm-0.32.0-fe9e86b1",
        "usage": {
            "prompt_tokens": 30,
            "total_tokens": 34,
            "completion_tokens": 4,
            "prompt_tokens_details": {
                "cached_tokens": 0,
                "created_cache_tokens": 0,
                "multimodal_tokens": None,
            },
            "completion_tokens_details": None,
        },
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "kv_transfer_params": None,
    }


def _without_own(body: dict[str, Any]) -> dict[str, Any]:
    """A body less what legitimately differs through the gateway (id, created, flowopt)."""
    return {k: v for k, v in body.items() if k not in ("id", "created", "flowopt")}


async def test_engine_fields_pass_through_in_json() -> None:
    engine = _chat_body()

    async with _gateway(lambda req: httpx.Response(200, json=engine)) as c:
        resp = await c.post("/v1/chat/completions", json=ASK)
    got = resp.json()
    assert _without_own(got) == _without_own(engine)
    assert "flowopt" in got


async def test_completion_fields_and_text_offset_pass_through() -> None:
    engine = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "text": "nodiscard\n#",
                "logprobs": {
                    "text_offset": [0, 9, 10],
                    "token_logprobs": [-3.2, -0.9, -1.3],
                    "tokens": ["nodiscard", "\n", "#"],
                    "top_logprobs": [{"nodiscard": -3.2}, {"\n": -0.9}, {"#": -1.3}],
                },
                "finish_reason": "length",
                "stop_reason": None,
                "prompt_logprobs": None,
            }
        ],
        "system_fingerprint": "fp",
        "usage": {"prompt_tokens": 1, "total_tokens": 4, "completion_tokens": 3},
    }

    async with _gateway(lambda req: httpx.Response(200, json=engine)) as c:
        resp = await c.post(
            "/v1/completions", json={"model": "m", "prompt": "hi", "max_tokens": 3, "logprobs": 1}
        )
    assert _without_own(resp.json()) == _without_own(engine)


def _sse(*events: dict[str, Any]) -> httpx.Response:
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return httpx.Response(
        200, content=raw + b"data: [DONE]\n\n", headers={"content-type": "text/event-stream"}
    )


def _chunk(i: int, text: str, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": i,
        "delta": {"content": text},
        "logprobs": None,
        "finish_reason": finish,
        "token_ids": None,
    }
    if finish is not None:
        choice["stop_reason"] = None
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [choice],
        **extra,
    }


USAGE_EVENT = {
    "id": "c",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "choices": [],
    "usage": {
        "prompt_tokens": 30,
        "total_tokens": 33,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 0, "created_cache_tokens": 0},
    },
    "system_fingerprint": "vllm-0.32.0-fe9e86b1",
}


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: {")]


async def test_engine_fields_pass_through_in_streams() -> None:
    """Every text chunk keeps the engine's fields (through the pre-encoded fast path), the
    final one its ``stop_reason``, the usage event its ``system_fingerprint`` and usage
    details."""
    sent = [_chunk(0, "He"), _chunk(0, "llo"), _chunk(0, "!", "length"), USAGE_EVENT]

    async with _gateway(lambda req: _sse(*sent)) as c:
        resp = await c.post(
            "/v1/chat/completions",
            json={**ASK, "stream": True, "stream_options": {"include_usage": True}},
        )
    got = _events(resp.text)
    assert got[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [_without_own(e) for e in got[1:]] == [_without_own(e) for e in sent]


@pytest.mark.parametrize("chat", [True, False])
def test_text_chunks_with_engine_fields_match_the_full_encoders(chat: bool) -> None:
    """The fast path re-encodes its template when a chunk's passthrough changes, and stays
    byte-identical to the full encoder with it."""
    from types import MappingProxyType

    from flowopt.gateway._wire import TextChunks, chat_chunk, completion_chunk, parse_call

    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "prompt": "x"}
    call = parse_call(body, kind="chat" if chat else "completion", tenant=None, request_id="r")
    encode = TextChunks(call, "m", chat=chat)
    plain = MappingProxyType({})
    token = MappingProxyType({"choices": (MappingProxyType({"token_ids": None}),)})
    final = MappingProxyType(
        {"system_fingerprint": "fp", "choices": (MappingProxyType({"stop_reason": "</s>"}),)}
    )
    for text, finish, extra in [("a", None, plain), ("b", None, token), ("c", "stop", final)]:
        full = (
            chat_chunk(call, "m", text=text, finish_reason=finish, passthrough=extra)
            if chat
            else completion_chunk(call, "m", text=text, finish_reason=finish, passthrough=extra)
        )
        assert encode(text, finish, extra) == full
    assert json.loads(encode("c", "stop", final)[6:])["system_fingerprint"] == "fp"


# -- several choices (n) -------------------------------------------------------------------
async def test_several_choices_json_and_streamed() -> None:
    """``n`` reaches the engine, and every choice it returns reaches the client."""
    seen: list[Any] = []

    def answer(req: httpx.Request) -> httpx.Response:
        body = _json(req)
        seen.append(body)
        if body.get("stream"):
            return _sse(
                _chunk(0, "a"), _chunk(1, "b"), _chunk(1, "!", "stop"), _chunk(0, "?", "length")
            )
        return httpx.Response(200, json=_chat_body(n=2))

    async with _gateway(answer) as c:
        whole = await c.post("/v1/chat/completions", json={**ASK, "n": 2, "temperature": 1})
        streamed = await c.post(
            "/v1/chat/completions", json={**ASK, "n": 2, "temperature": 1, "stream": True}
        )
    assert [b["n"] for b in seen] == [2, 2]
    assert _without_own(whole.json()) == _without_own(_chat_body(n=2))
    events = _events(streamed.text)
    text: dict[int, str] = {}
    finish: dict[int, str] = {}
    for e in events:
        for ch in e["choices"]:
            text[ch["index"]] = text.get(ch["index"], "") + (ch["delta"].get("content") or "")
            if ch["finish_reason"]:
                finish[ch["index"]] = ch["finish_reason"]
    assert text == {0: "a?", 1: "b!"} and finish == {0: "length", 1: "stop"}


async def test_graph_model_refuses_n_with_a_400_naming_n() -> None:
    backend = VLLMBackend(URL, model="m", transport=httpx.MockTransport(_engine(_unused)))
    pipe = pipeline("support", backend=backend, steps=[{"name": "a", "prompt": "{input}"}])
    app = create_app(pipe)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        resp = await c.post("/v1/chat/completions", json={**ASK, "model": "support", "n": 2})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "n"


async def test_cache_bypasses_n_and_records_why() -> None:
    """An entry holds one answer: n > 1 is never served from or stored in the cache, even
    seeded (a seeded sampled request is otherwise cacheable)."""
    from flowopt.testing import FakeBackend

    backend = FakeBackend()
    pipe = pipeline(
        "c",
        backend=backend,
        middleware=[{"cache": {"store": "memory", "semantic": False}}],
        steps=[{"name": "a", "prompt": "{input}"}],
    )
    params = {"temperature": 0.7, "seed": 1, "extra": {"n": 2}}
    for _ in range(2):
        resp = await (await pipe.acall(Request.chat("same question", params=params))).complete()
        (d,) = [d for d in resp.decisions if d.middleware == "cache"]
        assert (d.action, d.detail["skip_reason"]) == ("bypass", "choices")
    assert len(backend.calls) == 2
    await pipe.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_cascade_sends_n_straight_to_the_strongest_tier(stream: bool) -> None:
    from flowopt.testing import FakeBackend

    cheap, strong = FakeBackend(name="cheap"), FakeBackend(name="strong")
    tiers = [{"name": "cheap", "backend": "default"}, {"name": "strong", "backend": "strong"}]
    pipe = pipeline(
        "c",
        backend=cheap,  # type: ignore[arg-type]
        backends={"strong": strong},  # type: ignore[dict-item]
        middleware=[{"cascade": {"tiers": tiers, "threshold": 0.0}}],
        steps=[{"name": "a", "prompt": "{input}"}],
    )
    request = Request.chat("q", params={"temperature": 1, "extra": {"n": 3}}, stream=stream)
    resp = await (await pipe.acall(request)).complete()
    assert (len(cheap.calls), len(strong.calls)) == (0, 1)
    assert strong.calls[0].params.n == 3
    (d,) = [d for d in resp.decisions if d.middleware == "cascade"]
    assert d.action == "final" and d.detail["trail"] == [{"tier": "strong", "reason": "n", "n": 3}]
    await pipe.aclose()


# -- /v1/models -----------------------------------------------------------------------------
async def test_models_keep_the_engines_entry_and_add_flowopts_own() -> None:
    backend = VLLMBackend(URL, model="m", transport=httpx.MockTransport(_engine(_unused)))
    pipe = pipeline("support", backend=backend, steps=[{"name": "a", "prompt": "{input}"}])
    app = create_app(pipe)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        data = (await c.get("/v1/models")).json()["data"]
    assert data[0] == MODELS["data"][0]  # max_model_len, root, parent, permission, owned_by
    graph = next(m for m in data if m["id"] == "support")
    assert graph["owned_by"] == "flowopt" and graph["flowopt"] == {"kind": "graph"}
    kinds = {m["id"]: m.get("flowopt", {}).get("kind") for m in data}
    assert list(kinds.values())[:2] == [None, "graph"]


def _unused(req: httpx.Request) -> httpx.Response:
    raise AssertionError("no generation expected")


def _json(req: httpx.Request) -> Any:
    return json.loads(req.content)
