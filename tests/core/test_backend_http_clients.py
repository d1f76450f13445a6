"""The HTTP clients under VLLMBackend (native, the default; aiohttp; httpx) against a scripted
loopback server (a fake server: real sockets, canned bytes), for the failure shapes a real
vLLM server cannot be made to produce on demand: garbage bodies, streams cut mid-body,
silence past the timeout, refused connections. Each must give the same typed error."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from flowopt import (
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    IncompleteStream,
    Request,
    VLLMBackend,
)
from flowopt.backends._h1 import NativeClient
from flowopt.backends.http import AiohttpClient, HttpxClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CLIENTS = ["native", "aiohttp", "httpx"]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length) if length else b""


def _http(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n"
        f"content-type: application/json\r\n{extra}\r\n"
    ).encode() + body


def _fixed(raw: bytes, *, close: bool = False) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(raw)
        await writer.drain()
        if close:
            writer.close()

    return handle


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        async def loop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await handler(reader, writer)
                    if writer.is_closing():
                        return
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(loop, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for s in servers:
        s.close()


def _ok(text: str = "hello") -> bytes:
    return json.dumps(
        {
            "id": "c1",
            "model": "m",
            "choices": [{"index": 0, "message": {"content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1},
        }
    ).encode()


def test_auto_picks_native_and_a_transport_forces_httpx() -> None:
    import httpx

    async def kinds() -> tuple[object, object, object]:
        a = VLLMBackend("http://127.0.0.1:9", model="m")
        h = VLLMBackend("http://127.0.0.1:9", model="m", http="aiohttp")
        t = VLLMBackend(
            "http://127.0.0.1:9",
            model="m",
            transport=httpx.MockTransport(lambda r: httpx.Response(200)),
        )
        out = (a._http(), h._http(), t._http())
        for b in (a, h, t):
            await b.aclose()
        return out

    a, h, t = asyncio.run(kinds())
    assert isinstance(a, NativeClient) and isinstance(h, AiohttpClient)
    assert isinstance(t, HttpxClient)
    with pytest.raises(ConfigError, match="auto, native, aiohttp or httpx"):
        VLLMBackend("http://x:1", model="m", http="requests")
    with pytest.raises(ConfigError, match="httpx transport"):
        VLLMBackend(
            "http://x:1",
            model="m",
            http="aiohttp",
            transport=httpx.MockTransport(lambda r: httpx.Response(200)),
        )


@pytest.mark.parametrize("http", CLIENTS)
async def test_json_answer_and_keepalive_reuse(
    http: str, serve: Callable[[Handler], Awaitable[str]], make: Callable[..., VLLMBackend]
) -> None:
    bodies: list[dict[str, object]] = []
    peers: set[object] = set()

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.add(writer.get_extra_info("peername"))
        bodies.append(json.loads(await _read_request(reader)))
        writer.write(_http(200, _ok()))
        await writer.drain()

    url = await serve(counting)
    b = make(url, http=http)
    for _ in range(3):
        r = await b.generate(Request.chat("hi", params={"max_tokens": 3}))
        assert r.text == "hello" and r.usage.input_tokens == 2
    assert bodies[0]["max_tokens"] == 3 and bodies[0]["model"] == "m"
    assert len(peers) == 1  # one kept-alive connection carried all three requests


@pytest.mark.parametrize("http", CLIENTS)
async def test_garbage_and_http_errors(
    http: str, serve: Callable[[Handler], Awaitable[str]], make: Callable[..., VLLMBackend]
) -> None:
    url = await serve(_fixed(_http(200, b"<html>oops</html>")))
    with pytest.raises(BackendProtocolError, match="not JSON") as err:
        await make(url, http=http).generate(Request.chat("hi"))
    assert url in str(err.value)

    url = await serve(_fixed(_http(429, b"busy", {"Retry-After": "1.5"})))
    with pytest.raises(BackendHTTPError) as http_err:
        await make(url, http=http).generate(Request.chat("hi"))
    assert http_err.value.status == 429 and http_err.value.retry_after == 1.5
    assert "busy" in str(http_err.value)


@pytest.mark.parametrize("http", CLIENTS)
async def test_refused_and_silent(
    http: str, serve: Callable[[Handler], Awaitable[str]], make: Callable[..., VLLMBackend]
) -> None:
    from flowopt.local.server import find_free_port

    down = make(f"http://127.0.0.1:{find_free_port()}", http=http)
    with pytest.raises(BackendUnavailable, match="cannot connect"):
        await down.generate(Request.chat("hi"))

    release = asyncio.Event()
    arrived = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        arrived.set()
        await release.wait()  # never answers within the client's timeout
        writer.close()

    url = await serve(silent)
    slow = make(url, http=http, timeout=0.3)
    with pytest.raises(BackendTimeout, match=r"no answer within 0\.3s"):
        await slow.generate(Request.chat("hi"))
    # One connection, held by a request the server never answers: the next request's
    # time runs out waiting for a connection, and the error says so (not "no answer").
    full = make(url, http=http, timeout=5.0, connect_timeout=0.3, max_connections=1)
    arrived.clear()
    held = asyncio.ensure_future(full.generate(Request.chat("first")))
    await arrived.wait()  # the first request holds the only connection
    with pytest.raises(BackendTimeout, match=r"no connection within 0\.3s") as err:
        await full.generate(Request.chat("second"))
    assert "max_connections" in str(err.value)
    held.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await held
    release.set()


def _sse_head() -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(text: str, finish: str | None = None) -> bytes:
    obj = {
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


@pytest.mark.parametrize("http", CLIENTS)
async def test_stream_whole_then_cut(
    http: str, serve: Callable[[Handler], Awaitable[str]], make: Callable[..., VLLMBackend]
) -> None:
    whole = (
        _sse_head()
        + b"".join(_chunk(e) for e in (_event("he"), _event("llo", "stop"), b"data: [DONE]\n\n"))
        + b"0\r\n\r\n"
    )
    url = await serve(_fixed(whole))
    b = make(url, http=http)
    r = await b.generate(Request.chat("hi", stream=True))
    assert [c.text async for c in r.stream] == ["he", "llo"]  # type: ignore[union-attr]

    cut = _sse_head() + _chunk(_event("he"))  # then the connection closes mid-body
    url = await serve(_fixed(cut, close=True))
    b = make(url, http=http)
    r = await b.generate(Request.chat("hi", stream=True))
    seen: list[str] = []
    with pytest.raises(IncompleteStream) as err:
        async for c in r.stream:  # type: ignore[union-attr]
            seen.append(c.text)
    assert seen == ["he"] and err.value.partial_text == "he"


@pytest.mark.parametrize("http", ["native", "aiohttp"])
async def test_resends_once_after_a_clean_close_without_answer(
    http: str, serve: Callable[[Handler], Awaitable[str]], make: Callable[..., VLLMBackend]
) -> None:
    """The keep-alive race: the server closes a pooled connection (a clean FIN, no answer)
    just as the client sends on it. The request goes once more on a new connection; a
    server that closes every time gives a typed error after exactly two sends."""
    sends: list[int] = []

    def closes_first(n: int) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            sends.append(1)
            if len(sends) <= n:
                writer.close()  # clean close, nothing answered
                return
            writer.write(_http(200, _ok()))
            await writer.drain()

        return handle

    b = make(await serve(closes_first(1)), http=http)
    r = await b.generate(Request.chat("hi"))
    assert r.text == "hello" and len(sends) == 2

    sends.clear()
    b = make(await serve(closes_first(10)), http=http)
    with pytest.raises(BackendUnavailable, match="ServerDisconnected"):
        await b.generate(Request.chat("hi"))
    assert len(sends) == 2
