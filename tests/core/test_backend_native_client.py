"""flowopt's own HTTP/1.1 client (``NativeClient``) against a scripted loopback server (a
fake server: real sockets, canned bytes), for what the shared client tests do not reach:
the pool (reuse, a connection abandoned mid-body, the limit, idle expiry), body framings
(chunked in tiny pieces, read-to-close, gzip), flow control under a slow reader, a stall
mid-body and bad framing."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from flowopt.backends._h1 import NativeClient
from flowopt.backends.http import TransportBroken, TransportTimeout

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


def _http(body: bytes, headers: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{headers}\r\n".encode() + body


class _Server:
    """Serves ``handler`` per request on each connection; counts connections and EOFs."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed = asyncio.Event()
        self.closed_count = 0
        self.server: asyncio.Server | None = None

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while not reader.at_eof():
                await self.handler(reader, writer)
                if writer.is_closing():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed_count += 1
            self.closed.set()
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/x"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[_Server, str]]]]:
    made: list[_Server] = []

    async def start(handler: Handler) -> tuple[_Server, str]:
        s = _Server(handler)
        made.append(s)
        return s, await s.start()

    yield start
    for s in made:
        assert s.server is not None
        s.server.close()


@pytest.fixture
async def client() -> AsyncIterator[Callable[..., NativeClient]]:
    made: list[NativeClient] = []

    def build(**kw: float) -> NativeClient:
        opts: dict[str, float] = {"max_connections": 4, "timeout": 5.0, "connect_timeout": 2.0}
        opts.update(kw)
        c = NativeClient(
            headers={"Authorization": "Bearer k"},
            max_connections=int(opts.pop("max_connections")),
            **opts,
        )
        made.append(c)
        return c

    yield build
    for c in made:
        await c.aclose()


def _answer(body: bytes, headers: str = "") -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_http(body, headers))
        await writer.drain()

    return handle


async def test_request_bytes_and_reuse_after_a_whole_body(
    serve: Callable[[Handler], Awaitable[tuple[_Server, str]]],
    client: Callable[..., NativeClient],
) -> None:
    seen: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _read_request(reader))
        writer.write(_http(b'{"ok":1}', "x-thing: a\r\nX-Thing: b\r\n"))
        await writer.drain()

    server, url = await serve(echo)
    c = client()
    for _ in range(3):
        resp = await c.post(url + "?q=1", b'{"a":1}', timeout=5.0, connect_timeout=2.0)
        assert resp.status == 200 and resp.header("X-THING") == "a"
        assert await resp.read() == b'{"ok":1}'
        await resp.close()
    assert server.connections == 1
    head = seen[0].split(b"\r\n")
    assert head[0] == b"POST /v1/x?q=1 HTTP/1.1"
    assert b"Authorization: Bearer k" in head and b"Content-Length: 7" in head
    assert any(h.startswith(b"Host: 127.0.0.1:") for h in head)
    assert seen[0].endswith(b'\r\n\r\n{"a":1}')


async def test_a_body_abandoned_midway_closes_its_connection(
    serve: Callable[[Handler], Awaitable[tuple[_Server, str]]],
    client: Callable[..., NativeClient],
) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()

    server, url = await serve(chunked)
    c = client()
    resp = await c.post(url, b"{}", timeout=5.0, connect_timeout=2.0)
    chunks = resp.iter_chunks()
    assert await chunks.__anext__() == b"abc"
    await resp.close()  # the rest never read: the connection cannot carry another answer
    await asyncio.wait_for(server.closed.wait(), 5.0)
    assert server.closed_count == 1


async def test_the_limit_holds_and_a_freed_connection_serves_the_waiter(
    serve: Callable[[Handler], Awaitable[tuple[_Server, str]]],
    client: Callable[..., NativeClient],
) -> None:
    server, url = await serve(_answer(b"x"))
    c = client(max_connections=1)
    first = await c.post(url, b"{}", timeout=5.0, connect_timeout=2.0)
    second = asyncio.ensure_future(c.post(url, b"{}", timeout=5.0, connect_timeout=2.0))
    assert await first.read() == b"x"
    await first.close()
    resp = await second
    assert await resp.read() == b"x"
    await resp.close()
    assert server.connections == 1  # the second waited for the first's connection


async def test_idle_connections_close_after_keepalive(
    serve: Callable[[Handler], Awaitable[tuple[_Server, str]]],
    client: Callable[..., NativeClient],
) -> None:
    server, url = await serve(_answer(b"x"))
    c = client(keepalive=0.05)
    resp = await c.post(url, b"{}", timeout=5.0, connect_timeout=2.0)
    await resp.read()
    await resp.close()
    await asyncio.wait_for(server.closed.wait(), 5.0)  # the client closed its idle connection
    resp = await c.post(url, b"{}", timeout=5.0, connect_timeout=2.0)
    assert await resp.read() == b"x"
    assert server.connections == 2


async def test_tiny_chunks_read_to_close_and_gzip(
    serve: Callable[[Handler], Awaitable[tuple[_Server, str]]],
    client: Callable[..., NativeClient],
) -> None:
    body = b"data: " + b"y" * 5000 + b"\n\n"

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        raw += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:7], body[7:]))
        raw += b"0\r\n\r\n"
        for i in range(0, len(raw), 3):  # three bytes a write: every framing boundary split
            writer.write(raw[i : i + 3])
            await writer.drain()

    _, url = await serve(dribble)
    c = client()
    resp = await c.post(url, b"{}", timeout=5.0, connect_timeout=2.0)
    assert b"".join([part async for part in resp.iter_chunks()]) == body

    async def to_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    _, url = await serve(to_close)
    resp = await c.post(url, b"{}", timeout=5.0, connect_timeout=2.0)
    assert await resp.read() == b"until the end"

    _, url = await serve(_answer(gzip.compress(b'{"z":1}'), "content-encoding: gzip\r\n"))
    resp = await c.post(url, b"{}", timeout=5.0, connect_timeout=2.0)
    assert await resp.read() == b'{"z":1}'

    _, url = await serve(_answer(b"?", "content-encoding: br\r\n"))
    with pytest.raises(TransportBroken, match="content-encoding 'br'"):
        await c.post(url, b"{}", timeout=5.0, connect_timeout=2.0)


async def test_a_slow_reader_gets_every_byte(
    serve: Callable[[Handler], Awaitable[tuple[_Server, str]]],
    client: Callable[..., NativeClient],
) -> None:
    body = bytes(range(256)) * 8192  # 2 MiB: more than the client buffers before pausing
    _, url = await serve(_answer(body))
    c = client()
    resp = await c.post(url, b"{}", timeout=5.0, connect_timeout=2.0)
    got = bytearray()
    async for part in resp.iter_chunks():
        got += part
        await asyncio.sleep(0)  # yield between reads, as a relay does
    assert bytes(got) == body


async def test_a_stall_mid_body_times_out_and_bad_framing_is_broken(
    serve: Callable[[Handler], Awaitable[tuple[_Server, str]]],
    client: Callable[..., NativeClient],
) -> None:
    release = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        await release.wait()

    _, url = await serve(stall)
    c = client(timeout=0.2)
    resp = await c.post(url, b"{}", timeout=0.2, connect_timeout=2.0)
    with pytest.raises(TransportTimeout, match=r"within 0\.2s") as err:
        await resp.read()
    assert not err.value.connecting
    release.set()

    _, url = await serve(_garbage)
    with pytest.raises(TransportBroken, match="bad HTTP framing"):
        await c.post(url, b"{}", timeout=5.0, connect_timeout=2.0)


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()


async def test_a_failed_connect_gives_its_place_back(
    serve: Callable[[Handler], Awaitable[tuple[_Server, str]]],
    client: Callable[..., NativeClient],
) -> None:
    from flowopt.backends.http import TransportConnectError
    from flowopt.local.server import find_free_port

    _, url = await serve(_answer(b"x"))
    c = client(max_connections=1, connect_timeout=0.5)
    for _ in range(3):  # a leaked place would leave none for the live server
        with pytest.raises(TransportConnectError, match="cannot connect"):
            await c.post(
                f"http://127.0.0.1:{find_free_port()}/v1/x", b"{}", timeout=5.0, connect_timeout=0.5
            )
    resp = await c.post(url, b"{}", timeout=5.0, connect_timeout=0.5)
    assert await resp.read() == b"x"
