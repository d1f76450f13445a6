"""The official ``openai`` client against the gateway over the real vLLM server."""

from __future__ import annotations

import httpx
import openai
import pytest
from tests.gateway.gateway_live import LiveGateway

pytestmark = pytest.mark.integration

PROMPT = [{"role": "user", "content": "Name a colour."}]


def client(gw: LiveGateway, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=key or gw.api_key, max_retries=0)


def test_chat_json(live_gateway: LiveGateway) -> None:
    raw = client(live_gateway).chat.completions.with_raw_response.create(
        model=live_gateway.model, messages=PROMPT, max_tokens=6, temperature=0, user="u-1"
    )
    out = raw.parse()
    assert out.object == "chat.completion"
    assert out.model == live_gateway.model
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage is not None and out.usage.completion_tokens >= 1
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert len(raw.headers["x-flowopt-trace-id"]) == 32
    # The key decides the tenant; `user` is the end user within it.
    rid = raw.headers["x-request-id"]
    assert live_gateway.probe.seen[rid] == ("acme", "u-1")


def test_other_key_is_other_tenant(live_gateway: LiveGateway) -> None:
    raw = client(live_gateway, live_gateway.other_key).chat.completions.with_raw_response.create(
        model=live_gateway.model, messages=PROMPT, max_tokens=2, temperature=0
    )
    assert live_gateway.probe.seen[raw.headers["x-request-id"]] == ("globex", None)


def test_chat_stream_with_usage(live_gateway: LiveGateway) -> None:
    stream = client(live_gateway).chat.completions.create(
        model=live_gateway.model,
        messages=PROMPT,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text
    assert finishes[-1] in ("stop", "length")
    assert chunks[0].choices[0].delta.role == "assistant"
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert usage.completion_tokens >= 1


def test_stream_matches_json_answer(live_gateway: LiveGateway) -> None:
    c = client(live_gateway)
    whole = (
        c.chat.completions.create(
            model=live_gateway.model, messages=PROMPT, max_tokens=8, temperature=0
        )
        .choices[0]
        .message.content
    )
    streamed = "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(
            model=live_gateway.model, messages=PROMPT, max_tokens=8, temperature=0, stream=True
        )
        if ch.choices
    )
    assert streamed == whole


def test_completions_json_and_stream(live_gateway: LiveGateway) -> None:
    c = client(live_gateway)
    out = c.completions.create(
        model=live_gateway.model, prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert out.object == "text_completion"
    assert out.choices[0].text
    assert out.usage is not None and out.usage.completion_tokens >= 1
    pieces = list(
        c.completions.create(
            model=live_gateway.model,
            prompt="The capital of France is",
            max_tokens=4,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(p.choices[0].text for p in pieces if p.choices) == out.choices[0].text
    assert pieces[-1].usage is not None


def test_models_lists_backend_graph_and_embedding_model(live_gateway: LiveGateway) -> None:
    ids = [m.id for m in client(live_gateway).models.list()]
    assert ids == [live_gateway.model, "faq", "all-MiniLM-L6-v2"]


def test_graph_model_runs_the_pipeline(live_gateway: LiveGateway) -> None:
    c = client(live_gateway)
    out = c.chat.completions.create(model="faq", messages=PROMPT)
    assert out.model == "faq" and out.choices[0].message.content
    streamed = "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(model="faq", messages=PROMPT, stream=True)
        if ch.choices
    )
    assert streamed == out.choices[0].message.content  # temperature 0 in the spec


def test_graph_model_sees_the_system_prompt_history_and_params(
    live_gateway: LiveGateway,
) -> None:
    chat = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    live_gateway.probe.by_step.clear()
    out = client(live_gateway).chat.completions.create(
        model="faq", messages=chat, max_tokens=3, temperature=0.1, user="u-chat"
    )
    sent = live_gateway.probe.by_step["answer"]  # what the graph's LLM step sent to vLLM
    assert [(m.role, m.content) for m in sent.messages] == [
        ("system", "You are terse."),
        ("user", "My name is Ada."),
        ("assistant", "Hello Ada."),
        ("user", "Answer in a few words: What is my name?"),  # the step's prompt
    ]
    assert sent.params.max_tokens == 3 and sent.params.temperature == 0.1  # spec: 8 and 0
    assert (sent.tenant, sent.user) == ("acme", "u-chat")
    assert out.usage is not None and 1 <= out.usage.completion_tokens <= 3  # vLLM honoured it


def test_unknown_model_is_404(live_gateway: LiveGateway) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client(live_gateway).chat.completions.create(model="gpt-9", messages=PROMPT)
    assert err.value.code == "model_not_found"


def test_bad_parameter_is_400(live_gateway: LiveGateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(live_gateway).chat.completions.create(
            model=live_gateway.model, messages=PROMPT, temperature=7
        )
    assert "temperature" in err.value.message


def test_backend_rejection_passes_through_as_400(live_gateway: LiveGateway) -> None:
    # The server's context is 2048 tokens: asking for more is the caller's mistake, and
    # the caller gets the engine's own error object (its param and code kept).
    with pytest.raises(openai.BadRequestError) as err:
        client(live_gateway).chat.completions.create(
            model=live_gateway.model, messages=PROMPT, max_tokens=100_000
        )
    assert err.value.param == "max_tokens"
    assert err.value.response.json()["error"]["code"] == 400  # vLLM's, not flowopt's
    assert "max_model_len" in err.value.message
    assert err.value.response.headers["x-flowopt-error-source"] == "engine"


def test_missing_and_wrong_keys_are_401(live_gateway: LiveGateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(live_gateway, "sk-wrong-key-0000000").chat.completions.create(
            model=live_gateway.model, messages=PROMPT, max_tokens=2
        )
    resp = httpx.post(
        live_gateway.base_url + "/v1/chat/completions",
        json={"model": live_gateway.model, "messages": PROMPT},
    )
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_api_key"
    assert "sk-" not in resp.text  # no key is ever echoed


def test_rejections_carry_retry_after(live_gateway: LiveGateway) -> None:
    with pytest.raises(openai.InternalServerError) as shed:  # 503: the service's state
        client(live_gateway).chat.completions.create(
            model=live_gateway.model, messages=PROMPT, user="shed-me"
        )
    assert shed.value.status_code == 503
    assert shed.value.response.headers["retry-after"] == "3"
    with pytest.raises(openai.RateLimitError) as limited:  # 429: the caller's allowance
        client(live_gateway).chat.completions.create(
            model=live_gateway.model, messages=PROMPT, user="limit-me"
        )
    assert limited.value.response.headers["retry-after"] == "7"


def test_traceparent_is_joined(live_gateway: LiveGateway) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    resp = httpx.post(
        live_gateway.base_url + "/v1/chat/completions",
        headers={
            "authorization": f"Bearer {live_gateway.api_key}",
            "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
        },
        json={"model": live_gateway.model, "messages": PROMPT, "max_tokens": 2},
    )
    assert resp.status_code == 200
    assert resp.headers["x-flowopt-trace-id"] == trace_id


def test_metrics_count_requests_tokens_and_sheds(live_gateway: LiveGateway) -> None:
    client(live_gateway).chat.completions.create(
        model=live_gateway.model, messages=PROMPT, max_tokens=2
    )
    # A streamed answer of its own, so the TTFT histogram is there whatever ran before.
    for _ in client(live_gateway).chat.completions.create(
        model=live_gateway.model, messages=PROMPT, max_tokens=2, stream=True
    ):
        pass
    with pytest.raises(openai.InternalServerError):
        client(live_gateway).chat.completions.create(
            model=live_gateway.model, messages=PROMPT, user="shed-me"
        )
    text = httpx.get(live_gateway.base_url + "/metrics").text
    assert (
        f'flowopt_gateway_requests_total{{model="{live_gateway.model}",'
        f'route="/v1/chat/completions",status="200"}}'
    ) in text
    assert 'flowopt_gateway_shed_total{reason="overloaded"}' in text
    tokens = 'flowopt_gateway_tokens_total{{direction="output",model="{}"}}'
    assert tokens.format(live_gateway.model) in text
    assert "flowopt_gateway_request_duration_seconds_bucket" in text
    assert "flowopt_gateway_time_to_first_token_seconds_bucket" in text
    assert 'flowopt_gateway_routes_total{backend="vllm"}' in text


def test_health(live_gateway: LiveGateway) -> None:
    resp = httpx.get(live_gateway.base_url + "/health")
    assert resp.status_code == 200 and resp.json()["status"] == "ok"
