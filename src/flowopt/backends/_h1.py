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
no cookies (``http: auto`` picks httpx when the environment names a proxy for a remote
engine, see :mod:`._reach`). ``http: aiohttp`` or ``httpx`` on the backend picks a general
client instead.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Mapping
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit

from flowopt.backends._h1_conn import Connection, Disconnected
from flowopt.backends.http import (
    RawResponse,
    TransportBroken,
    TransportConnectError,
    TransportTimeout,
)

__all__ = ["NativeClient"]


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
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._limit = max(1, max_connections)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        fixed = {"User-Agent": "flowopt", "Accept": "*/*", **dict(headers)}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self._idle: dict[tuple[str, int, bool], list[Connection]] = {}
        self._open = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._tls = tls  # None: the system's store, built at the first https connection
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the pool --------------------------------------------------------------------------
    def idle(self, conn: Connection) -> None:
        if self._closed:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweep is None:
            self._sweep = self.loop.call_at(conn.idle_since + self._keepalive, self._expire)
        self._notify()

    def forget(self, conn: Connection) -> None:
        """A connection closed: out of the pool, and its slot goes to a waiter."""
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
        self._free_slot(conn)

    def _free_slot(self, conn: Connection) -> None:
        """Give back ``conn``'s place under the limit, once (a connect that timed out
        may still see its late connection lost)."""
        if conn.counted:
            conn.counted = False
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

    async def _acquire(self, target: _Target, connect_timeout: float) -> Connection:
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
        conn = Connection(self, target.key)
        tls: ssl.SSLContext | None = None
        if target.tls:
            tls = self._tls = self._tls or ssl.create_default_context()
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, target.host, target.port, ssl=tls),
                connect_timeout,
            )
        except BaseException as exc:
            conn.abort()  # a connection made just as the wait ended is not kept
            self._free_slot(conn)
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
            except Disconnected:
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
