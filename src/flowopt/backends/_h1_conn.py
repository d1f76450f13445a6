"""One connection of :class:`~flowopt.backends._h1.NativeClient` and the answer it carries.

An ``asyncio.Protocol`` fed by the event loop: httptools' parser turns the bytes into a
status, headers and body pieces, which wait in the :class:`Answer` until the backend
reads them. Why split from the client: the pool and requests are one idea, the wire
handling of one connection another.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httptools

from flowopt.backends.http import TransportBroken, TransportTimeout

if TYPE_CHECKING:
    from flowopt.backends._h1 import NativeClient

__all__ = ["Answer", "Connection", "Disconnected"]

_BUFFER_HIGH = 1 << 18  # bytes held for a slow reader before the socket stops being read


class Disconnected(Exception):
    """The server closed the connection cleanly before any byte of the answer."""


class Answer:
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

    def __init__(self, conn: Connection) -> None:
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

    def __init__(self, resp: Answer) -> None:
        self._resp = resp

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        data = await self._resp.next_chunk()
        if data is None:
            raise StopAsyncIteration
        return data


class Connection(asyncio.Protocol):
    """One connection and the answer it is carrying; fed by the event loop."""

    __slots__ = (
        "counted",
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
        self.resp: Answer | None = None
        self.lost = False
        self.counted = True  # holds one of the client's max_connections places
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
                resp.fail(Disconnected())
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
    def send(self, data: bytes, timeout: float) -> Answer:
        assert self.transport is not None
        resp = self.resp = Answer(self)
        self.got_bytes = False
        self.until_eof = False
        self.timeout = timeout
        self.last = self.loop.time()
        if self.lost:  # closed by the server between the pool and this write
            resp.fail(Disconnected())
            return resp
        self.timer = self.loop.call_at(self.last + timeout, self._watch)
        self.transport.write(data)
        return resp

    def done_with(self, resp: Answer, *, reusable: bool) -> None:
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
