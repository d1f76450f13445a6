"""FaultProxy: an HTTP proxy on loopback that injects failures in front of a real server.

Tests of resilience must fail the way production fails — a real socket reset, a real 429
with ``Retry-After``, a stream that stops after two events — against the real model
server, not a fake that raises the error we expect. The proxy forwards every request to
``upstream`` unchanged, except those matching ``paths``, which take the next fault from a
schedule the test sets::

    async with FaultProxy("http://127.0.0.1:8011") as proxy:
        proxy.schedule(Fault.status(429, retry_after=1), Fault.reset(), Fault.ok())
        backend = VLLMBackend(proxy.url, model="smollm2")
        ...
        assert [e.fault for e in proxy.events] == ["status", "reset", "ok"]

Faults: ``ok`` (forward), ``status`` (answer ``code`` at once, optional ``Retry-After``),
``hang`` (read the request, never answer, until the client gives up or the proxy closes),
``reset`` (TCP RST before any answer), ``cut`` (forward, then reset the connection after
``after_events`` server-sent events, or after ``after_bytes`` of body), ``delay`` (logged on
arrival, then wait, then forward). After the schedule is used up, ``set_default`` decides
(``ok`` at first); ``set_random(rate, faults, seed)`` draws a fault for each request
instead (benchmarks).

Also runnable for manual tests and other processes:
``python -m flowopt.testing.faultproxy --upstream http://127.0.0.1:8011 --port 8099 --rate 0.2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import httpx

__all__ = ["Fault", "FaultProxy", "ProxyEvent"]

FaultKind = Literal["ok", "status", "hang", "reset", "cut", "delay"]
_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected behaviour for one request. Build with the class methods."""

    kind: FaultKind = "ok"
    code: int = 0
    retry_after: float | None = None
    after_events: int | None = None
    after_bytes: int | None = None
    seconds: float = 0.0

    @classmethod
    def ok(cls) -> Fault:
        return cls("ok")

    @classmethod
    def status(cls, code: int, retry_after: float | None = None) -> Fault:
        return cls("status", code=code, retry_after=retry_after)

    @classmethod
    def hang(cls) -> Fault:
        return cls("hang")

    @classmethod
    def reset(cls) -> Fault:
        return cls("reset")

    @classmethod
    def cut(cls, *, after_events: int | None = 2, after_bytes: int | None = None) -> Fault:
        return cls(
            "cut", after_events=None if after_bytes else after_events, after_bytes=after_bytes
        )

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        return cls("delay", seconds=seconds)


@dataclass(frozen=True, slots=True)
class ProxyEvent:
    """What the proxy did with one request."""

    method: str
    path: str
    fault: FaultKind
    status: int | None
    at: float


class FaultProxy:
    """See the module docstring. ``url`` is valid after :meth:`start`."""

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        paths: Sequence[str] = ("/v1/chat/completions", "/v1/completions"),
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = port
        self.paths = tuple(paths)
        self.events: list[ProxyEvent] = []
        self._schedule: deque[Fault] = deque()
        self._default = Fault.ok()
        self._rate = 0.0
        self._random_faults: list[Fault] = []
        self._rng = random.Random(0)
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self._closing: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._arrived: asyncio.Condition | None = None

    # -- control ---------------------------------------------------------------------------
    def schedule(self, *faults: Fault) -> None:
        """Append faults, used one per matching request, in order."""
        self._schedule.extend(faults)

    def set_default(self, fault: Fault) -> None:
        """What a matching request gets once the schedule is empty (``ok`` at first)."""
        self._default = fault

    def set_random(self, rate: float, faults: Sequence[Fault], *, seed: int = 0) -> None:
        """With probability ``rate``, a request gets one of ``faults`` (uniformly)."""
        self._rate = rate
        self._random_faults = list(faults)
        self._rng = random.Random(seed)

    def reset_log(self) -> None:
        self.events.clear()

    def count(self, fault: FaultKind | None = None) -> int:
        return sum(1 for e in self.events if fault is None or e.fault == fault)

    async def wait_for_requests(self, n: int) -> None:
        """Wait until ``n`` matching requests have arrived (synchronisation, not sleeping)."""
        assert self._arrived is not None
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.events) >= n)

    def _next_fault(self) -> Fault:
        if self._schedule:
            return self._schedule.popleft()
        if self._rate and self._random_faults and self._rng.random() < self._rate:
            return self._rng.choice(self._random_faults)
        return self._default

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FaultProxy:
        self._closing = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=5.0))
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=2.0)
            for t in pending:
                t.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        if self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- serving ---------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                keep = await self._one(reader, writer)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # the proxy is closing; a handler must not end "with an exception"
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    async def _record(self, method: str, path: str, fault: FaultKind, status: int | None) -> None:
        self.events.append(ProxyEvent(method, path, fault, status, time.monotonic()))
        assert self._arrived is not None
        async with self._arrived:
            self._arrived.notify_all()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers.append((k.strip(), v.strip()))
        hmap = {k.lower(): v for k, v in headers}
        if hmap.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        else:
            body = await reader.readexactly(int(hmap.get("content-length", "0") or 0))
        keep = hmap.get("connection", "").lower() != "close"
        path = target.split("?", 1)[0]
        fault = self._next_fault() if path in self.paths else Fault.ok()

        if fault.kind == "status":
            await self._record(method, path, "status", fault.code)
            extra = (
                [("Retry-After", f"{fault.retry_after:g}")] if fault.retry_after is not None else []
            )
            msg = json.dumps(
                {"error": {"message": f"injected {fault.code}", "code": fault.code}}
            ).encode()
            await _write_response(
                writer, fault.code, [("Content-Type", "application/json"), *extra], msg
            )
            return keep
        if fault.kind == "reset":
            await self._record(method, path, "reset", None)
            _rst(writer)
            return False
        if fault.kind == "hang":
            await self._record(method, path, "hang", None)
            assert self._closing is not None
            gone = asyncio.ensure_future(reader.read(1))  # b"" when the client gives up
            closing = asyncio.ensure_future(self._closing.wait())
            await asyncio.wait({gone, closing}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            closing.cancel()
            _rst(writer)
            return False
        if fault.kind == "delay":
            # Logged on arrival (status None), so a test can wait for "the request is being
            # held" rather than for its answer.
            await self._record(method, path, "delay", None)
            await asyncio.sleep(fault.seconds)  # the injected slowness itself
            return await self._forward(
                method, target, path, headers, body, writer, fault, keep, record=False
            )
        return await self._forward(method, target, path, headers, body, writer, fault, keep)

    async def _forward(
        self,
        method: str,
        target: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        writer: asyncio.StreamWriter,
        fault: Fault,
        keep: bool,
        record: bool = True,
    ) -> bool:
        assert self._client is not None
        fwd = [(k, v) for k, v in headers if k.lower() not in _HOP]
        req = self._client.build_request(method, self.upstream + target, headers=fwd, content=body)
        try:
            resp = await self._client.send(req, stream=True)
        except httpx.HTTPError as exc:
            if record:
                await self._record(method, path, fault.kind, 502)
            await _write_response(
                writer, 502, [("Content-Type", "text/plain")], f"upstream failed: {exc}".encode()
            )
            return keep
        if record:
            await self._record(method, path, fault.kind, resp.status_code)
        out_headers = [(k, v) for k, v in resp.headers.items() if k.lower() not in _HOP]
        try:
            status_line = f"HTTP/1.1 {resp.status_code} {resp.reason_phrase}\r\n"
            hdrs = "".join(f"{k}: {v}\r\n" for k, v in out_headers)
            writer.write(
                (status_line + hdrs + "Transfer-Encoding: chunked\r\n\r\n").encode("latin-1")
            )
            sent_bytes = 0
            sent_events = 0
            async for piece in resp.aiter_raw():
                if fault.kind == "cut":
                    if (
                        fault.after_bytes is not None
                        and sent_bytes + len(piece) >= fault.after_bytes
                    ):
                        piece = piece[: max(0, fault.after_bytes - sent_bytes)]
                        if piece:
                            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                            await writer.drain()
                        _rst(writer)
                        return False
                    if fault.after_events is not None:
                        n = piece.count(b"\n\n")
                        if sent_events + n >= fault.after_events:
                            keep_upto = _index_of_nth(
                                piece, b"\n\n", fault.after_events - sent_events
                            )
                            piece = piece[:keep_upto]
                            if piece:
                                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                                await writer.drain()
                            _rst(writer)
                            return False
                        sent_events += n
                sent_bytes += len(piece)
                if piece:
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
            if fault.kind == "cut":  # the answer was shorter than the cut point: cut the end
                _rst(writer)
                return False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            await resp.aclose()
        return keep


def _index_of_nth(data: bytes, sep: bytes, n: int) -> int:
    """End index of the ``n``-th ``sep`` in ``data`` (n >= 1); 0 for n <= 0."""
    end = 0
    for _ in range(max(0, n)):
        i = data.find(sep, end)
        if i < 0:
            return len(data)
        end = i + len(sep)
    return end


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed server or a middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)


async def _write_response(
    writer: asyncio.StreamWriter, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    reason = {
        429: "Too Many Requests",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }.get(status, "Error" if status >= 400 else "OK")
    hdrs = "".join(f"{k}: {v}\r\n" for k, v in headers)
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\n{hdrs}Content-Length: {len(body)}\r\n\r\n".encode("latin-1")
        + body
    )
    await writer.drain()


def _main() -> None:  # pragma: no cover - manual tool
    import argparse

    ap = argparse.ArgumentParser(description="flowopt fault-injecting HTTP proxy")
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, default=8099)
    ap.add_argument("--rate", type=float, default=0.0, help="share of requests given a fault")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    async def run() -> None:
        proxy = FaultProxy(args.upstream, port=args.port)
        proxy.set_random(
            args.rate,
            [Fault.status(503), Fault.status(429, retry_after=1), Fault.reset(), Fault.cut()],
            seed=args.seed,
        )
        await proxy.start()
        print(f"fault proxy on {proxy.url} -> {args.upstream} (rate {args.rate})", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":  # pragma: no cover
    _main()
