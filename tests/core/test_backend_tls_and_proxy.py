"""Reaching an engine over TLS and through a proxy, with each of the three HTTP clients.

The servers are scripted loopback servers (fakes: real sockets and real TLS handshakes
with certificates from a throwaway CA made by ``trustme``, canned answers); the clients
and the ``ssl`` stack are the real ones. What is checked: an https engine signed by a
private CA answers (JSON and streamed) once ``ca_file`` names that CA; without it, or for a
certificate issued to another host, the error says which and how to fix it; a bad
``ca_file`` fails when the backend is built; ``http: auto`` goes through the proxy the
environment names for a remote engine, and keeps the direct client for loopback ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trustme

from flowopt import BackendUnavailable, ConfigError, Request, VLLMBackend
from flowopt.backends._h1 import NativeClient
from flowopt.backends._reach import proxy_for, shown_proxy
from flowopt.backends.http import HttpxClient

CLIENTS = ["native", "aiohttp", "httpx"]
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, (await reader.readexactly(length) if length else b"")


def _answer(body: dict[str, object]) -> bytes:
    raw = json.dumps(body).encode()
    return (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(raw)}\r\n\r\n"
    ).encode() + raw


def _completion(text: str) -> bytes:
    return _answer(
        {
            "id": "c1",
            "model": "m",
            "choices": [{"index": 0, "message": {"content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1},
        }
    )


def _stream(texts: list[str]) -> bytes:
    events = [
        json.dumps(
            {"model": "m", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": f}]}
        )
        for t, f in zip(texts, [None] * (len(texts) - 1) + ["stop"], strict=True)
    ]
    body = b"".join(b"data: " + e.encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


class _Engine:
    """Answers every request on every connection; keeps each request's head."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, body = await _read_request(reader)
                self.heads.append(head)
                stream = json.loads(body or b"{}").get("stream", False)
                writer.write(_stream(["he", "llo"]) if stream else _completion("hello"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)


@pytest.fixture
async def tls_engine(
    ca: trustme.CA,
) -> AsyncIterator[Callable[[str], Awaitable[tuple[_Engine, int]]]]:
    """Start an https engine whose certificate names ``host`` (signed by ``ca``)."""
    servers: list[asyncio.Server] = []

    async def start(host: str) -> tuple[_Engine, int]:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(host).configure_cert(ctx)
        engine = _Engine()
        server = await asyncio.start_server(engine.handle, "127.0.0.1", 0, ssl=ctx)
        servers.append(server)
        return engine, server.sockets[0].getsockname()[1]

    yield start
    for s in servers:
        s.close()


@pytest.mark.parametrize("http", CLIENTS)
async def test_an_https_engine_of_a_private_ca_answers_with_ca_file(
    http: str,
    ca_file: str,
    tls_engine: Callable[[str], Awaitable[tuple[_Engine, int]]],
    make: Callable[..., VLLMBackend],
) -> None:
    engine, port = await tls_engine("127.0.0.1")
    b = make(f"https://127.0.0.1:{port}", http=http, ca_file=ca_file)
    r = await b.generate(Request.chat("hi"))
    assert r.text == "hello"
    s = await b.generate(Request.chat("hi", stream=True))
    assert [c.text async for c in s.stream] == ["he", "llo"]  # type: ignore[union-attr]
    assert len(engine.heads) == 2 and engine.heads[0].startswith(b"POST /v1/chat/completions ")


@pytest.mark.parametrize("http", CLIENTS)
async def test_an_untrusted_or_misnamed_certificate_says_why(
    http: str,
    ca_file: str,
    tls_engine: Callable[[str], Awaitable[tuple[_Engine, int]]],
    make: Callable[..., VLLMBackend],
) -> None:
    engine, port = await tls_engine("127.0.0.1")
    untrusted = make(f"https://127.0.0.1:{port}", http=http)
    with pytest.raises(BackendUnavailable, match="TLS certificate not trusted") as err:
        await untrusted.generate(Request.chat("hi"))
    assert "ca_file" in (err.value.hint or "")

    _, other = await tls_engine("engine.example")  # issued to another host
    misnamed = make(f"https://127.0.0.1:{other}", http=http, ca_file=ca_file)
    with pytest.raises(BackendUnavailable, match="does not match the host") as err:
        await misnamed.generate(Request.chat("hi"))
    assert "host name" in (err.value.hint or "")
    assert engine.heads == []  # nothing was sent over a connection that did not verify


def test_a_bad_ca_file_fails_when_the_backend_is_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        VLLMBackend("https://127.0.0.1:9", model="m", ca_file=str(tmp_path / "missing.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="no usable PEM certificate"):
        VLLMBackend("https://127.0.0.1:9", model="m", ca_file=str(junk))


async def test_a_plain_http_server_on_an_https_url_says_so(
    make: Callable[..., VLLMBackend],
) -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        for http in CLIENTS:
            b = make(f"https://127.0.0.1:{port}", http=http)
            with pytest.raises(BackendUnavailable, match="TLS handshake failed") as err:
                await b.generate(Request.chat("hi"))
            assert "use http://" in (err.value.hint or ""), http
    finally:
        server.close()


def test_proxy_for_reads_the_environment_and_skips_this_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    remote = ["http://engine.example:8000", "https://gpu.example", "http://inside.corp:8000"]
    local = [
        "http://127.0.0.1:8000",
        "http://127.1:8000",
        "http://0.0.0.0:8000",
        "http://localhost:8000",
        "http://vllm.localhost:8000",
        "http://[::1]:8000",
        "http://[::ffff:127.0.0.1]:8000",
    ]
    assert [proxy_for(u) for u in remote + local] == [None] * 10
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "inside.corp")
    assert [proxy_for(u) for u in remote] == ["http://proxy.corp:3128", None, None]
    assert [proxy_for(u) for u in local] == [None] * 7
    monkeypatch.setenv("ALL_PROXY", "http://all.corp:3128")
    assert proxy_for("https://gpu.example") == "http://all.corp:3128"
    monkeypatch.setenv("HTTPS_PROXY", "http://tls.corp:3128")
    assert proxy_for("https://gpu.example") == "http://tls.corp:3128"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_auto_goes_through_the_environments_proxy_to_a_remote_engine(
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[..., VLLMBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = _Engine()  # a forward proxy that answers itself and keeps what it was asked
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    caplog.set_level(logging.INFO, logger="flowopt.backends")
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        # engine.invalid never resolves: only the proxy can carry this request
        remote = make("http://engine.invalid:8000")
        assert isinstance(remote._http(), HttpxClient)
        r = await remote.generate(Request.chat("hi"))
        assert r.text == "hello"
        assert proxy.heads[0].startswith(
            b"POST http://engine.invalid:8000/v1/chat/completions HTTP/1.1"
        )
        assert "goes through the environment's proxy" in caplog.text
        local = make("http://0.0.0.0:8000")
        assert isinstance(local._http(), NativeClient)  # an engine on this machine: direct
        assert _warnings(caplog) == []

        native = make("http://engine.invalid:8000", http="native")
        native._http()
        assert any("connects directly" in w for w in _warnings(caplog))
    finally:
        server.close()


async def test_a_proxy_that_is_down_or_unusable_says_so(
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[..., VLLMBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flowopt.local.server import find_free_port

    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{find_free_port()}")
    down = make("http://engine.invalid:8000")
    with pytest.raises(BackendUnavailable, match="cannot connect through the proxy") as err:
        await down.generate(Request.chat("hi"))
    assert "proxy up" in (err.value.hint or "")

    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.setenv("ALL_PROXY", "socks4://127.0.0.1:1080")  # a scheme httpx lacks
    auto = make("http://engine.invalid:8000")
    assert isinstance(auto._http(), NativeClient)  # stays direct, and says why
    assert any("cannot use (socks4://127.0.0.1:1080)" in w for w in _warnings(caplog))
    explicit = make("http://engine.invalid:8000", http="httpx")
    with pytest.raises(ConfigError, match="httpx cannot use the proxy settings"):
        await explicit.generate(Request.chat("hi"))


def test_a_proxys_credentials_never_reach_a_log_or_an_error() -> None:
    assert shown_proxy("http://proxy.corp:3128") == "http://proxy.corp:3128"
    assert shown_proxy("http://alice:s3cret@proxy.corp:3128") == "http://***@proxy.corp:3128"
    assert shown_proxy("socks5://tok@[fd00::1]:1080") == "socks5://***@[fd00::1]:1080"


async def test_a_proxy_with_credentials_is_logged_without_them(
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[..., VLLMBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flowopt.local.server import find_free_port

    caplog.set_level(logging.INFO, logger="flowopt.backends")
    monkeypatch.setenv("HTTP_PROXY", f"http://alice:s3cret@127.0.0.1:{find_free_port()}")
    b = make("http://engine.invalid:8000")
    with pytest.raises(BackendUnavailable) as err:
        await b.generate(Request.chat("hi"))
    assert "s3cret" not in str(err.value) and "***@127.0.0.1" in str(err.value)
    assert "s3cret" not in caplog.text and "***@127.0.0.1" in caplog.text
