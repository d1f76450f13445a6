"""The gateway's graph route runs on the whole chat with the call's params and deadline,
and request bodies over the configured limit are refused with 413 before being read.

Over FakeBackend (no server): the fake records every request it gets, so the tests check
what reached each LLM step, not what a model made of it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from flowopt import pipeline
from flowopt.errors import RejectedError
from flowopt.gateway._wire import parse_call
from flowopt.gateway.app import Gateway, create_app, read_body
from flowopt.gateway.errors import HTTPProblem
from flowopt.gateway.models import Target
from flowopt.pipeline import Pipeline
from flowopt.spec import DEFAULT_MAX_BODY_BYTES, GatewaySpec, load_spec
from flowopt.testing import FakeBackend
from flowopt.types import Message, Request

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "My name is Ada."},
    {"role": "assistant", "content": "Hello Ada."},
    {"role": "user", "content": "What is my name?"},
]


def _answer(request: Request) -> str:
    return "names" if request.step == "topic" else f"answer to {request.last_user_text}"


def _graph_pipe() -> tuple[FakeBackend, Pipeline]:
    """An intermediate step (own params) feeding the answer step (system + `{input}`)."""
    fb = FakeBackend(_answer)
    pipe = pipeline(
        "unit",
        backend=fb,
        defaults={"temperature": 0.5, "max_tokens": 64},
        steps=[
            {
                "name": "topic",
                "prompt": "Topic of: {input}",
                "params": {"temperature": 0, "max_tokens": 4},
            },
            {"name": "answer", "system": "Topic: {topic}.", "prompt": "{input}"},
        ],
    )
    return fb, pipe


def _client(pipe: Any, settings: GatewaySpec | None = None) -> httpx.AsyncClient:
    app = create_app(pipe, settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


def _sent(request: Request) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in request.messages]


# -- the graph route sees the whole chat ------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
async def test_the_gateways_graph_route_sees_the_system_prompt_and_history(stream: bool) -> None:
    fb, pipe = _graph_pipe()
    body = {
        "model": "unit",  # the graph, not a backend model
        "messages": CHAT,
        "temperature": 0.2,
        "max_tokens": 7,
        "stop": ["\n"],
        "top_k": 5,  # unknown to flowopt: passed through in Params.extra
        "stream": stream,
    }
    async with _client(pipe) as c:
        resp = await c.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    if stream:
        events = [line[6:] for line in resp.text.split("\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        text = "".join(
            json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]
        )
    else:
        text = resp.json()["choices"][0]["message"]["content"]
    assert text == "answer to What is my name?"

    topic, answer = fb.calls
    history = [("user", "My name is Ada."), ("assistant", "Hello Ada.")]
    # the intermediate step: caller's system prompt and history, its own prompt last;
    # its own params (the client's are for the answer)
    assert _sent(topic) == [
        ("system", "You are terse."),
        *history,
        ("user", "Topic of: What is my name?"),
    ]
    assert (topic.params.temperature, topic.params.max_tokens, topic.params.stop) == (0, 4, ())
    # the answer step: its system prompt merged with the caller's, the history, and the
    # caller's last turn once (the template is `{input}`)
    assert _sent(answer) == [
        ("system", "Topic: names.\n\nYou are terse."),
        *history,
        ("user", "What is my name?"),
    ]
    assert answer.params.temperature == 0.2 and answer.params.max_tokens == 7
    assert answer.params.stop == ("\n",) and dict(answer.params.extra) == {"top_k": 5}
    assert answer.stream is stream


async def test_graph_route_refuses_a_chat_that_does_not_end_with_a_user_turn() -> None:
    fb, pipe = _graph_pipe()
    async with _client(pipe) as c:
        resp = await c.post("/v1/chat/completions", json={"model": "unit", "messages": CHAT[:3]})
    assert resp.status_code == 400 and "end with a user message" in resp.json()["error"]["message"]
    assert fb.calls == []


def _call(deadline_in: float | None) -> Any:
    call = parse_call(
        {"model": "unit", "messages": CHAT, "max_tokens": 3},
        kind="chat",
        tenant="acme",
        request_id="r1",
    )
    if deadline_in is None:
        return call
    return dataclasses.replace(
        call, request=call.request.replace(deadline=time.monotonic() + deadline_in)
    )


async def test_graph_route_passes_the_calls_deadline_as_the_runs_timeout() -> None:
    fb, pipe = _graph_pipe()
    gw = Gateway(pipe)
    before = time.monotonic()
    call = _call(30.0)
    out = await gw._answer(call, Target("graph", "unit"))
    assert out.text == "answer to What is my name?"
    assert call.request.deadline is not None
    for sent in fb.calls:  # every LLM call of the run carries the call's deadline
        assert sent.deadline is not None
        assert before < sent.deadline <= call.request.deadline + 1e-3
        assert sent.tenant == "acme"
    # without a deadline the run has none
    fb.calls.clear()
    await gw._answer(_call(None), Target("graph", "unit"))
    assert all(sent.deadline is None for sent in fb.calls)
    # a spent deadline never starts the graph
    fb.calls.clear()
    with pytest.raises(RejectedError) as err:
        await gw._answer(_call(-1.0), Target("graph", "unit"))
    assert err.value.reason == "deadline" and fb.calls == []
    await pipe.aclose()


# -- bodies over the limit ----------------------------------------------------------------------
LIMIT = 1000


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gw"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("gw", 80),
        "state": {},
    }


async def _asgi(
    headers: list[tuple[bytes, bytes]], receive: Callable[[], Awaitable[dict[str, Any]]]
) -> tuple[int, dict[bytes, bytes], bytes]:
    fb = FakeBackend()
    app = create_app(
        pipeline("unit", backend=fb, steps=[{"name": "a", "prompt": "{input}"}]),
        GatewaySpec(max_body_bytes=LIMIT),
    )
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(_scope(headers), receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert fb.calls == []
    return start["status"], dict(start["headers"]), body


def _is_too_large(status: int, headers: dict[bytes, bytes], body: bytes) -> None:
    assert status == 413
    assert headers[b"connection"] == b"close"  # the unread rest cannot carry a next request
    assert json.loads(body) == {
        "error": {
            "message": f"the request body is larger than this server's limit of {LIMIT} bytes",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    }


async def test_content_length_over_the_limit_is_refused_without_reading() -> None:
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        raise AssertionError("the body was read")

    status, headers, body = await _asgi([(b"content-length", b"20000000")], receive)
    _is_too_large(status, headers, body)
    assert reads == 0


async def test_chunked_body_over_the_limit_is_refused_as_soon_as_it_passes() -> None:
    chunk = b" " * 64
    reads = 0

    async def receive() -> dict[str, Any]:  # an endless chunked body, no Content-Length
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    status, headers, body = await _asgi([(b"transfer-encoding", b"chunked")], receive)
    _is_too_large(status, headers, body)
    assert reads == LIMIT // len(chunk) + 1  # stopped at the first chunk past the limit


def _padded(size: int) -> bytes:
    raw = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    return raw + b" " * (size - len(raw))


async def test_a_body_at_the_limit_is_served_and_one_byte_more_is_not() -> None:
    pipe = pipeline("unit", backend=FakeBackend(), steps=[{"name": "a", "prompt": "{input}"}])
    headers = {"content-type": "application/json"}
    async with _client(pipe, GatewaySpec(max_body_bytes=LIMIT)) as c:
        ok = await c.post("/v1/chat/completions", content=_padded(LIMIT), headers=headers)
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "echo: hi"

        async def chunks() -> Any:  # chunked, no Content-Length: counted as it arrives
            body = _padded(LIMIT + 1)
            for i in range(0, len(body), 100):
                yield body[i : i + 100]

        over = await c.post("/v1/chat/completions", content=chunks(), headers=headers)
        assert over.status_code == 413 and over.json()["error"]["code"] == "request_too_large"
        big = await c.post("/v1/chat/completions", content=_padded(LIMIT + 1), headers=headers)
        assert big.status_code == 413


async def test_read_body_returns_a_single_message_without_copying() -> None:
    payload = b'{"x": 1}'
    messages: Iterator[dict[str, Any]] = iter(
        [{"type": "http.request", "body": payload, "more_body": False}]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    assert await read_body(receive, str(len(payload)), 100) is payload
    parts = iter(
        [
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.request", "body": b"", "more_body": True},
            {"type": "http.request", "body": b"cd", "more_body": False},
        ]
    )

    async def receive_parts() -> dict[str, Any]:
        return next(parts)

    assert await read_body(receive_parts, None, 4) == b"abcd"
    with pytest.raises(HTTPProblem) as err:
        await read_body(receive_parts, "5", 4)
    assert err.value.status == 413


def test_the_body_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert GatewaySpec().max_body_bytes == DEFAULT_MAX_BODY_BYTES == 4 * 1024 * 1024
    spec = tmp_path / "p.yaml"
    spec.write_text(
        "name: p\nbackend: fake\nsteps: [{name: a, prompt: '{input}'}]\n"
        "gateway: {max_body_bytes: 2048}\n"
    )
    parsed = load_spec(spec)
    assert parsed.gateway is not None and parsed.gateway.max_body_bytes == 2048
    assert "max_body_bytes: 2048" in parsed.to_yaml()
    with pytest.raises(ValueError):
        GatewaySpec(max_body_bytes=0)

    from flowopt.cli import cli
    from flowopt.gateway import server

    seen: dict[str, Any] = {}
    monkeypatch.setattr(server, "serve", lambda spec, **kw: seen.update(kw))
    out = CliRunner().invoke(cli, ["serve", str(spec), "--max-body-bytes", "1234"])
    assert out.exit_code == 0, out.output
    assert seen["max_body_bytes"] == 1234
    assert server._settings(parsed, 1234).max_body_bytes == 1234
    assert server._settings(parsed, None).max_body_bytes == 2048
    assert CliRunner().invoke(cli, ["serve", str(spec), "--max-body-bytes", "0"]).exit_code == 2
    # --workers N: each worker builds its app from the environment
    monkeypatch.setenv(server.SPEC_ENV, str(spec))
    monkeypatch.setenv(server.MAX_BODY_ENV, "777")
    app = server.app_from_env()
    assert app.state.gateway.settings.max_body_bytes == 777


def test_message_inputs_are_plain_data_in_the_state() -> None:
    """A chat given as Message objects reaches the state as plain dicts (checkpointable)."""
    fb, pipe = _graph_pipe()
    result = pipe.invoke([Message("system", "s"), Message("user", "q", name="ada")])
    assert result.outputs["messages"] == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q", "name": "ada"},
    ]
    assert result.outputs["input"] == "q"
    assert fb.calls[-1].messages[-1] == Message("user", "q", name="ada")


# -- through a real HTTP server (uvicorn), over a raw socket -------------------------------------
def _raw_exchange(port: int, head: bytes, body_parts: list[bytes]) -> tuple[bytes, bool]:
    """Send a request head and some body, then read the answer without sending the rest.
    Returns the answer and whether the server closed the connection after it."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        data = b""
        while True:
            got = sock.recv(65536)
            if not got:
                return data, True
            data += got
            if b"\r\n\r\n" in data:
                header, _, rest = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in header.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                if len(rest) >= length:
                    try:
                        closed = sock.recv(1) == b""
                    except (ConnectionResetError, TimeoutError):
                        closed = True
                    return data, closed


def test_a_real_server_refuses_a_20_mb_body_from_its_headers() -> None:
    from flowopt.gateway._background import BackgroundServer

    fb = FakeBackend()
    app = create_app(pipeline("unit", backend=fb, steps=[{"name": "a", "prompt": "{input}"}]))
    with BackgroundServer(app) as server:
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
            b"Content-Type: application/json\r\nContent-Length: 20000000\r\n\r\n"
        )
        # only 1 KiB of the announced 20 MB is ever sent: the answer comes from the header
        answer, closed = _raw_exchange(server.port, head, [b'{"messages": [' + b" " * 1000])
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b'"code":"request_too_large"' in answer and closed
        # chunked, no Content-Length: refused once the counted bytes pass the limit
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        piece = b" " * 65536
        chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
        answer, closed = _raw_exchange(server.port, head, [chunk] * 65)  # 4 MiB + 64 KiB
        assert answer.startswith(b"HTTP/1.1 413 ") and closed
    assert fb.calls == []
