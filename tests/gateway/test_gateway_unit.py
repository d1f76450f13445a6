"""Gateway unit tests over FakeBackend (no server): wire format, errors, auth, tracing,
and disconnect cancellation at the ASGI level."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from flowopt import pipeline
from flowopt.backends.base import ModelInfo
from flowopt.errors import (
    BackendHTTPError,
    BackendTimeout,
    BackendUnavailable,
    DeadlineExceeded,
    EndpointCoolingDown,
    InvalidRequestError,
    Overloaded,
    RateLimited,
    RejectedError,
)
from flowopt.gateway._wire import parse_call
from flowopt.gateway.app import create_app
from flowopt.gateway.auth import KeyRing
from flowopt.gateway.errors import HTTPProblem, problem_from
from flowopt.spec import GatewaySpec, load_spec
from flowopt.stream import Stream
from flowopt.testing import FakeBackend, SpanCapture
from flowopt.types import Chunk, Request, Response


def _client(pipe: Any, settings: GatewaySpec | None = None) -> httpx.AsyncClient:
    app = create_app(pipe, settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


def _fake_pipe(backend: Any = None) -> Any:
    return pipeline(
        "unit", backend=backend or FakeBackend(), steps=[{"name": "answer", "prompt": "{input}"}]
    )


# -- auth ---------------------------------------------------------------------------------
def test_keyring_maps_keys_to_tenants_and_hides_them() -> None:
    ring = KeyRing({"acme": "sk-acme-123456", "globex": "sk-globex-123456"})
    assert ring.tenant_for("Bearer sk-globex-123456") == "globex"
    assert "sk-" not in repr(ring)
    for header in (None, "Bearer nope-nope-nope", "Basic sk-acme-123456", "Bearer "):
        with pytest.raises(HTTPProblem) as err:
            ring.tenant_for(header)
        assert err.value.status == 401 and "sk-" not in err.value.message
    assert KeyRing({}).tenant_for(None) is None


def test_gateway_spec_keys_from_env_never_written_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_KEY", "sk-acme-secret-value")
    spec = tmp_path / "p.yaml"
    spec.write_text(
        "name: p\nbackend: fake\nsteps: [{name: a, prompt: '{input}'}]\n"
        "gateway: {api_keys: {acme: '${ACME_KEY}'}, port: 9000}\n"
    )
    parsed = load_spec(spec)
    assert parsed.gateway is not None
    assert parsed.gateway.api_keys["acme"].get_secret_value() == "sk-acme-secret-value"
    assert "sk-acme-secret-value" not in repr(parsed)
    written = parsed.to_yaml()
    assert "sk-acme-secret-value" not in written and "${FLOWOPT_API_KEY_ACME}" in written


# -- wire ----------------------------------------------------------------------------------
def test_parse_call_passes_unknown_fields_and_roles_through() -> None:
    call = parse_call(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": "hi"},
            ],
            "max_completion_tokens": 5,
            "top_k": 3,
            "ignore_eos": True,
            "stop": "x",
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "u",
        },
        kind="chat",
        tenant=None,
        request_id="r1",
    )
    req = call.request
    # passed through as sent: the engine's chat template decides what a developer turn is
    assert req.messages[0].role == "developer" and req.messages[0].text == "be brief"
    assert req.messages[0].to_openai()["content"] == [{"type": "text", "text": "be brief"}]
    assert req.params.max_tokens == 5 and req.params.stop == ("x",)
    assert dict(req.params.extra) == {"top_k": 3, "ignore_eos": True}
    assert req.stream and call.include_usage
    assert (req.tenant, req.user) == ("u", "u")  # no keys: `user` is the identity
    assert (
        parse_call(
            {"prompt": ["p"], "logprobs": 2}, kind="completion", tenant="t", request_id="r"
        ).request.params.top_logprobs
        == 2
    )


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"messages": []},
        {"messages": [{"content": "x"}]},
        {"messages": "hi"},
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    ],
)
def test_parse_call_rejects_malformed_bodies(body: Any) -> None:
    with pytest.raises(HTTPProblem) as err:
        parse_call(body, kind="chat", tenant=None, request_id="r")
    assert err.value.status == 400


# -- error mapping --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "status", "retry_after"),
    [
        (InvalidRequestError("bad"), 400, None),
        (Overloaded("busy", reason="overloaded", retry_after=0.2), 503, "1"),
        (Overloaded("queue full", reason="shed:evicted", retry_after=1.5), 503, "2"),
        (RateLimited("slow down", reason="tenant_rate_limit", retry_after=4.1), 429, "5"),
        # the type decides, never the reason's words: a rate-limit-sounding reason on an
        # Overloaded error is still 503, a plain reason on RateLimited is still 429
        (Overloaded("busy", reason="rate_limit_like_words", retry_after=1), 503, "1"),
        (RateLimited("over", reason="x", retry_after=1), 429, "1"),
        (RejectedError("refused", retry_after=2), 503, "2"),
        (DeadlineExceeded("spent"), 504, None),
        (EndpointCoolingDown("cooling", endpoint="e", retry_after=2.2), 502, "3"),
        (BackendHTTPError("x", endpoint="e", status=429, retry_after=3), 429, "3"),
        (
            BackendHTTPError(
                "x", endpoint="e", status=400, body='{"error":{"message":"too long"}}'
            ),
            400,
            None,
        ),
        (BackendHTTPError("x", endpoint="e", status=500), 502, None),
        (BackendTimeout("x", endpoint="e"), 504, None),
        (BackendUnavailable("x", endpoint="e"), 502, None),
        (RuntimeError("secret detail"), 500, None),
    ],
)
def test_errors_map_to_status_and_retry_after(
    exc: Exception, status: int, retry_after: str | None
) -> None:
    problem = problem_from(exc)
    assert problem.status == status
    assert problem.headers.get("Retry-After") == retry_after
    assert "secret detail" not in problem.message and "endpoint e" not in problem.message
    body = problem.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]


async def test_backend_failure_is_openai_error_json() -> None:
    pipe = _fake_pipe(FakeBackend(fail=BackendTimeout("slow", endpoint="http://x")))
    async with _client(pipe) as c:
        resp = await c.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
    assert resp.status_code == 504
    assert resp.json()["error"]["code"] == "backend_timeout"
    assert "http://x" not in resp.text


async def test_sse_format_and_usage_with_fake_backend() -> None:
    async with _client(_fake_pipe()) as c:
        resp = await c.post(
            "/v1/chat/completions",
            json={
                "model": "fake-model",
                "messages": [{"role": "user", "content": "a b c"}],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    events = [line[6:] for line in resp.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    objs = [json.loads(e) for e in events[:-1]]
    assert objs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(o["choices"][0]["delta"].get("content", "") for o in objs if o["choices"])
    assert text == "echo: a b c"
    assert objs[-1]["choices"] == [] and objs[-1]["usage"]["completion_tokens"] == 4
    assert resp.headers["content-type"].startswith("text/event-stream")


# -- tracing --------------------------------------------------------------------------------
@pytest.fixture
def spans() -> SpanCapture:
    capture = SpanCapture()
    capture.clear()
    return capture


async def test_traceparent_becomes_the_parent_of_the_server_span(spans: SpanCapture) -> None:
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    async with _client(_fake_pipe()) as c:
        resp = await c.post(
            "/v1/chat/completions",
            headers={"traceparent": f"00-{trace_id}-{parent}-01"},
            json={"messages": [{"role": "user", "content": "hi"}]},
        )
    assert resp.headers["x-flowopt-trace-id"] == trace_id
    mine = [s for s in spans.spans() if format(s.context.trace_id, "032x") == trace_id]
    server = next(s for s in mine if s.name == "POST /v1/chat/completions")
    assert server.parent is not None and format(server.parent.span_id, "016x") == parent
    backend = next(s for s in mine if s.name.startswith("chat "))
    assert backend.parent is not None and backend.parent.span_id == server.context.span_id


# -- disconnects -------------------------------------------------------------------------------
class FakeEndlessBackend(FakeBackend):
    """A fake that streams forever and records when its stream is closed."""

    provider: ClassVar[str] = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.closed = asyncio.Event()
        self.started = asyncio.Event()

    async def model_info(self) -> ModelInfo:
        return ModelInfo(id="endless")

    async def generate(self, request: Request) -> Response:
        async def gen() -> AsyncIterator[Chunk]:
            i = 0
            try:
                while True:
                    self.started.set()
                    yield Chunk("tok ", i)
                    i += 1
                    await asyncio.sleep(0)
            finally:
                self.closed.set()

        stream = Stream(gen(), lambda: Response(text="", model="endless"))
        return Response(text="", model="endless", finish_reason=None, stream=stream)


@pytest.mark.parametrize("stream", [True, False])
async def test_disconnect_closes_the_backend_stream(stream: bool) -> None:
    backend = FakeEndlessBackend()
    app = create_app(_fake_pipe(backend))
    body = json.dumps({"messages": [{"role": "user", "content": "go"}], "stream": stream}).encode()
    sent: list[dict[str, Any]] = []
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await messages.put({"type": "http.request", "body": body, "more_body": False})

    async def receive() -> dict[str, Any]:
        return await messages.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gw"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("gw", 80),
        "state": {},
    }
    served = asyncio.ensure_future(app(scope, receive, send))
    await backend.started.wait()
    await messages.put({"type": "http.disconnect"})  # the client hangs up mid-answer
    await asyncio.wait_for(backend.closed.wait(), 10)
    await asyncio.wait_for(served, 10)
    gw = app.state.gateway
    gone = gw.metrics.registry.get_sample_value(
        "flowopt_gateway_client_disconnects_total", {"route": "/v1/chat/completions"}
    )
    assert gone == 1


@pytest.mark.parametrize("chat", [True, False])
def test_text_chunks_match_the_full_encoders(chat: bool) -> None:
    """The per-token fast path's pre-built bytes are the full encoder's, byte for byte."""
    from flowopt.gateway._wire import TextChunks, chat_chunk, completion_chunk, parse_call

    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "prompt": "x"}
    call = parse_call(body, kind="chat" if chat else "completion", tenant=None, request_id="r1")
    model = 'mo"d\u00e9l'
    encode = TextChunks(call, model, chat=chat)
    for text, finish in [("hi ", None), ('\u00e9"\n\u2028\\', "length"), ("", "stop")]:
        full = (
            chat_chunk(call, model, text=text, finish_reason=finish)
            if chat
            else completion_chunk(call, model, text=text, finish_reason=finish)
        )
        assert encode(text, finish) == full


async def test_model_table_resolves_each_name_once_and_still_refuses_unknown_ones() -> None:
    from flowopt.gateway.models import ModelTable

    table = ModelTable({"default": FakeBackend()}, "graph-model")
    await table.refresh()
    first = table.resolve("fake-model")
    assert first.kind == "backend" and first.pin is None
    assert table.resolve("fake-model") is first  # built once, not per request
    assert table.resolve(None) is table.resolve(None)
    assert table.resolve("graph-model").kind == "graph"
    for _ in range(2):
        with pytest.raises(HTTPProblem) as err:
            table.resolve("nope")
        assert err.value.status == 404
