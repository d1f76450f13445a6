"""flowopt's own HTTP/1.1 client for engine calls: asyncio protocols + httptools' parser.

Why a third client: every gateway request pays its engine call, and aiohttp's client is
general (cookies, redirects, proxies, tracing hooks, multidict headers, a ``ClientResponse``
and a ``StreamReader`` per request, a timer per read): about a fifth of the gateway's CPU
per request in the profile (docs/gateway.md). An engine call needs little of that: a POST
of a JSON body to a fixed host over a kept-alive connection, and the answer's bytes as they
arrive. This client does just that, on the same C parser uvicorn uses (llhttp through
``httptools``), with:

- one pool per client, LIFO per host, at most ``max_connections`` open (waiting for a free
  one counts against the connect timeout, as aiohttp's does); idle connections close after
  ``keepalive`` seconds, below uvicorn's 5 s, so the pool never hands out one the server
  is about to close;
- the read timeout as a bound on each wait for bytes (not on the whole answer), kept with
  one lazily re-armed timer per response instead of a timer per read;
- a request sent once more on a new connection when the server closes the connection
  cleanly before any byte of the answer (the keep-alive race), as the aiohttp client does;
- the three transport failures of :mod:`flowopt.backends.http`, so the backend's typed
  errors do not depend on the client.

It speaks only what engines answer: Content-Length, chunked or read-to-close bodies,
gzip/deflate when a server compresses although not asked to; no proxies, no redirects,
no cookies. ``http: aiohttp`` or ``httpx`` on the backend picks a general client instead.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httptools

from flowopt.backends.http import (
    RawResponse,
    TransportBroken,
    TransportConnectError,
    TransportTimeout,
)

__all__ = ["NativeClient"]

_BUFFER_HIGH = 1 << 18  # bytes held for a slow reader before the socket stops being read


class _Target(NamedTuple):
    key: tuple[str, int, bool]
    host: str
    port: int
    tls: bool
    path: bytes
    host_line: bytes


@lru_cache(maxsize=512)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TransportConnectError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    if parts.port:
        shown = f"{shown}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(
        (host, port, tls), host, port, tls, path.encode("latin-1"), f"Host: {shown}\r\n".encode()
    )


class _Disconnected(Exception):
    """The server closed the connection cleanly before any byte of the answer."""


class _Response:
    """One answer on one connection: its head, its body as it arrives, its end."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_decoder",
        "_error",
        "_held",
        "_released",
        "_waiter",
        "body_done",
        "headers",
        "status",
    )

    def __init__(self, conn: _Conn) -> None:
        self._conn = conn
        self._chunks: list[bytes] = []
        self._held = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._decoder: Any = None
        self._released = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body_done = False

    # -- fed by the connection ---------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def feed(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self.fail(TransportBroken(f"the body does not decompress: {exc}"))
                self._conn.abort()
                return
            if not data:
                return
        self._chunks.append(data)
        self._held += len(data)
        if self._held > _BUFFER_HIGH:
            self._conn.pause()
        self._wake()

    def finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._chunks.append(tail)
        self.body_done = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if self._error is None and not self.body_done:
            self._error = exc
        self._wake()

    def decode_as(self, encoding: str) -> bool:
        """Decompress the body named by Content-Encoding; False for one not handled."""
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(47)  # gzip or zlib header, detected
            return True
        return encoding in ("", "identity")

    # -- read by the backend -----------------------------------------------------------
    async def _wait(self) -> None:
        self._waiter = self._conn.loop.create_future()
        await self._waiter

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._held = 0
        self._conn.resume()
        return data

    async def head(self) -> None:
        while not self.status:
            if self._error is not None:
                raise self._error
            await self._wait()

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    async def read(self) -> bytes:
        while not self.body_done:
            if self._error is not None:
                raise self._error
            await self._wait()
        return self._take() if self._chunks else b""

    def iter_chunks(self) -> AsyncIterator[bytes]:
        return _Chunks(self)

    async def next_chunk(self) -> bytes | None:
        while not self._chunks:
            if self.body_done:
                return None
            if self._error is not None:
                raise self._error
            await self._wait()
        return self._take()

    async def close(self) -> None:
        self.release()

    def release(self) -> None:
        """Back to the pool when the answer was read to its end, else the connection
        closes (the rest of the body would still arrive on it)."""
        if self._released:
            return
        self._released = True
        self._conn.done_with(self, reusable=self.body_done and self._error is None)


class _Chunks:
    __slots__ = ("_resp",)

    def __init__(self, resp: _Response) -> None:
        self._resp = resp

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        data = await self._resp.next_chunk()
        if data is None:
            raise StopAsyncIteration
        return data


class _Conn(asyncio.Protocol):
    """One connection and the answer it is carrying; fed by the event loop."""

    __slots__ = (
        "got_bytes",
        "idle_since",
        "keep",
        "key",
        "last",
        "loop",
        "lost",
        "parser",
        "paused",
        "pool",
        "resp",
        "timeout",
        "timer",
        "transport",
        "until_eof",
    )

    def __init__(self, pool: NativeClient, key: tuple[str, int, bool]) -> None:
        self.pool = pool
        self.key = key
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.resp: _Response | None = None
        self.lost = False
        self.keep = False
        self.paused = False
        self.got_bytes = False
        self.until_eof = False
        self.idle_since = 0.0
        self.last = 0.0
        self.timeout = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.resp is None or self.resp.body_done:
            self.abort()  # bytes after the answer (or on an idle connection): not reusable
            return
        self.got_bytes = True
        self.last = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.resp.fail(TransportBroken(f"bad HTTP framing from the server: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        resp = self.resp
        if resp is not None and not resp.body_done:
            if self.until_eof and resp.status:
                resp.finish()
                self.keep = False
            elif not self.got_bytes and exc is None:
                resp.fail(_Disconnected())
            else:
                why = f"{type(exc).__name__}: {exc}" if exc else "closed mid-answer"
                resp.fail(TransportBroken(f"the server connection was lost ({why})"))
        self._disarm()
        self.pool.forget(self)

    # -- httptools callbacks -------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.resp is not None
        self.resp.headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        resp = self.resp
        assert resp is not None
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue): the real one follows
            resp.headers.clear()
            return
        headers = resp.headers
        self.keep = self.parser.should_keep_alive()
        self.until_eof = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in (204, 304)
        )
        if not resp.decode_as(headers.get("content-encoding", "").strip().lower()):
            encoding = headers["content-encoding"]
            resp.fail(TransportBroken(f"unsupported content-encoding {encoding!r}"))
            self.abort()
            return
        resp.status = status
        resp._wake()

    def on_body(self, body: bytes) -> None:
        assert self.resp is not None
        self.resp.feed(body)

    def on_message_complete(self) -> None:
        resp = self.resp
        if resp is not None and resp.status:
            resp.finish()
            self._disarm()

    # -- flow control and the read timeout ------------------------------------------------
    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.last = self.loop.time()
            self.transport.resume_reading()

    def _watch(self) -> None:
        resp = self.resp
        if resp is None or resp.body_done or self.lost:
            self.timer = None
            return
        if self.paused:  # the reader is behind, not the server
            self.last = self.loop.time()
        due = self.last + self.timeout
        if self.loop.time() >= due:
            self.timer = None
            resp.fail(TransportTimeout(f"no bytes from the server within {self.timeout:.3g}s"))
            self.abort()
            return
        self.timer = self.loop.call_at(due, self._watch)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- one exchange ----------------------------------------------------------------------
    def send(self, data: bytes, timeout: float) -> _Response:
        assert self.transport is not None
        resp = self.resp = _Response(self)
        self.got_bytes = False
        self.until_eof = False
        self.timeout = timeout
        self.last = self.loop.time()
        if self.lost:  # closed by the server between the pool and this write
            resp.fail(_Disconnected())
            return resp
        self.timer = self.loop.call_at(self.last + timeout, self._watch)
        self.transport.write(data)
        return resp

    def done_with(self, resp: _Response, *, reusable: bool) -> None:
        if resp is not self.resp:
            return
        self.resp = None
        self._disarm()
        if reusable and self.keep and not self.lost and not self.paused:
            self.pool.idle(self)
        else:
            self.abort()

    def abort(self) -> None:
        self._disarm()
        if self.transport is not None and not self.lost:
            self.transport.abort()


class NativeClient:
    """The :class:`~flowopt.backends.http.HTTPClient` flowopt uses by default when
    ``httptools`` is installed (the ``gateway`` extra); see the module docstring."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        max_connections: int,
        timeout: float,
        connect_timeout: float,
        keepalive: float = 4.0,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._limit = max(1, max_connections)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        fixed = {"User-Agent": "flowopt", "Accept": "*/*", **dict(headers)}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self._idle: dict[tuple[str, int, bool], list[_Conn]] = {}
        self._open = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the pool --------------------------------------------------------------------------
    def idle(self, conn: _Conn) -> None:
        if self._closed:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweep is None:
            self._sweep = self.loop.call_at(conn.idle_since + self._keepalive, self._expire)
        self._notify()

    def forget(self, conn: _Conn) -> None:
        """A connection closed: out of the pool, and its slot goes to a waiter."""
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
        self._open -= 1
        self._notify()

    def _notify(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _expire(self) -> None:
        self._sweep = None
        now = self.loop.time()
        oldest: float | None = None
        for conns in self._idle.values():
            for conn in list(conns):
                if now - conn.idle_since >= self._keepalive:
                    conn.abort()
                elif oldest is None or conn.idle_since < oldest:
                    oldest = conn.idle_since
        if oldest is not None:
            self._sweep = self.loop.call_at(oldest + self._keepalive, self._expire)

    async def _acquire(self, target: _Target, connect_timeout: float) -> _Conn:
        deadline: float | None = None
        while True:
            idle = self._idle.get(target.key)
            while idle:
                conn = idle.pop()
                if not conn.lost and self.loop.time() - conn.idle_since < self._keepalive:
                    return conn
                conn.abort()
            if self._closed:
                raise TransportConnectError("the HTTP client is closed")
            if self._open < self._limit:
                break
            if deadline is None:
                deadline = self.loop.time() + connect_timeout
            left = deadline - self.loop.time()
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left if left > 0 else 0)
            except TimeoutError:
                raise TransportTimeout(
                    f"no free connection within {connect_timeout:.3g}s", connecting=True
                ) from None
        self._open += 1
        conn = _Conn(self, target.key)
        tls: ssl.SSLContext | None = None
        if target.tls:
            tls = self._tls = self._tls or ssl.create_default_context()
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, target.host, target.port, ssl=tls),
                connect_timeout,
            )
        except BaseException as exc:
            if not conn.lost:  # connection_lost did not run: the slot is still counted
                self._open -= 1
                self._notify()
            if isinstance(exc, TimeoutError):
                raise TransportTimeout(
                    f"no connection within {connect_timeout:.3g}s", connecting=True
                ) from None
            if isinstance(exc, OSError):
                raise TransportConnectError(
                    f"cannot connect to {target.host}:{target.port}: {exc}"
                ) from None
            raise
        return conn

    # -- requests --------------------------------------------------------------------------
    async def _request(
        self, method: bytes, url: str, body: bytes | None, timeout: float, connect_timeout: float
    ) -> RawResponse:
        target = _target(url)
        head = b"%s %s HTTP/1.1\r\n%s%s" % (method, target.path, target.host_line, self._fixed)
        if body is None:
            data = head + b"\r\n"
        else:
            data = b"%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
                head,
                len(body),
                body,
            )
        for attempt in (0, 1):
            conn = await self._acquire(target, connect_timeout)
            resp = conn.send(data, timeout)
            try:
                await resp.head()
            except _Disconnected:
                # The keep-alive race: a clean close before any answer byte. Sent once
                # more on another connection; a second close is an error.
                resp.release()
                if attempt == 0:
                    continue
                raise TransportBroken(
                    "ServerDisconnected: the server closed the connection without answering"
                ) from None
            except BaseException:
                resp.release()
                raise
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    async def post(
        self, url: str, body: bytes, *, timeout: float, connect_timeout: float
    ) -> RawResponse:
        return await self._request(b"POST", url, body, timeout, connect_timeout)

    async def get(self, url: str) -> RawResponse:
        return await self._request(b"GET", url, None, self._timeout, self._connect_timeout)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conns in list(self._idle.values()):
            for conn in list(conns):
                conn.abort()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
