"""Slow, idle, greedy and vanishing clients against a real uvicorn gateway over real
sockets, with short limits configured (issue 20): slowloris headers (408), huge or
countless headers (431), an idle flood past the connection cap (503 at once, never a held
socket), a slow body (408), an aborted upload (a client disconnect: no 5xx, no traceback),
and secrets in the query string never reaching the access log.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowopt import pipeline
from flowopt.gateway._background import BackgroundServer, free_port
from flowopt.gateway.app import create_app
from flowopt.spec import GatewaySpec
from flowopt.testing import FakeBackend

LIMITS = GatewaySpec(
    header_timeout=1.0,
    body_timeout=1.0,
    keep_alive_timeout=1.0,
    max_header_bytes=4096,
    max_headers=20,
    max_connections=4,
)
BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


def _head(length: int, extra: bytes = b"", path: bytes = b"/v1/chat/completions") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n" + extra + b"\r\n"
    )


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the 15 s socket
    timeout is a safety net: every limit under test is 1 s)."""
    data = b""
    while True:
        try:
            got = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not got:
            return data
        data += got


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=15)


@pytest.fixture
def served() -> Iterator[tuple[BackgroundServer, FakeBackend]]:
    fb = FakeBackend()
    app = create_app(
        pipeline("unit", backend=fb, steps=[{"name": "a", "prompt": "{input}"}]), LIMITS
    )
    with BackgroundServer(app, access_log=True) as server:
        yield server, fb


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_slowloris_headers_get_408_and_the_socket_is_closed(served: tuple) -> None:
    server, fb = served
    with _connect(server.port) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")  # never finishes
        answer = _read_all(sock)  # returns when the server closes: after header_timeout
    assert _status(answer) == 408 and b'"code":"request_timeout"' in answer
    assert fb.calls == []


def test_an_idle_connection_is_closed_after_the_header_timeout(served: tuple) -> None:
    server, _ = served
    with _connect(server.port) as sock:
        answer = _read_all(sock)  # nothing sent at all
    assert _status(answer) == 408


def test_a_huge_header_is_431_before_it_ends(served: tuple) -> None:
    server, fb = served
    with _connect(server.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 8192)
        answer = _read_all(sock)  # the header never ends: refused at the byte limit
    assert _status(answer) == 431
    assert b'"code":"request_header_fields_too_large"' in answer and fb.calls == []


def test_too_many_headers_is_431(served: tuple) -> None:
    server, _ = served
    extra = b"".join(b"X-H%d: v\r\n" % i for i in range(30))
    with _connect(server.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n" + extra + b"\r\n")
        answer = _read_all(sock)
    assert _status(answer) == 431


def test_an_idle_flood_past_the_connection_cap_is_refused_at_once(served: tuple) -> None:
    server, _ = served
    idle = [_connect(server.port) for _ in range(LIMITS.max_connections)]
    try:
        # the server has accepted the four: a request on the first one still works
        idle[0].sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert idle[0].recv(65536).startswith(b"HTTP/1.1 200 ")
        with _connect(server.port) as extra:
            answer = _read_all(extra)  # answered and closed, not held
        assert _status(answer) == 503 and b"retry-after: 1" in answer.lower()
        assert b'"code":"too_many_connections"' in answer
    finally:
        for sock in idle:
            sock.close()


def test_a_slow_body_gets_408(served: tuple) -> None:
    server, fb = served
    with _connect(server.port) as sock:
        sock.sendall(_head(len(BODY)) + BODY[:5])  # the rest never comes
        answer = _read_all(sock)
    assert _status(answer) == 408 and b'"code":"request_timeout"' in answer
    assert fb.calls == []


def test_an_aborted_upload_is_a_client_disconnect_without_a_traceback(
    served: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    server, fb = served
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        with _connect(server.port) as sock:
            sock.sendall(_head(100_000) + b'{"messages": [')
            # SO_LINGER 0: close() sends RST, the abrupt way a client vanishes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sample = 'flowopt_gateway_client_disconnects_total{route="/v1/chat/completions"}'
    metrics = ""
    for _ in range(200):  # until the server has seen all three hang-ups
        with _connect(server.port) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            metrics = _read_all(sock).decode()
        if sample in metrics and float(metrics.split(sample, 1)[1].split()[0]) >= 3:
            break
    assert float(metrics.split(sample, 1)[1].split()[0]) == 3  # one each, exactly
    assert 'status="5' not in metrics  # never counted as a server error
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert fb.calls == []


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING])
def test_keys_in_the_query_string_never_reach_the_access_log(served: tuple, level: int) -> None:
    """uvicorn's access logger does not propagate: a handler on it sees what any
    configured handler would, at each level."""
    server, _ = served
    access = logging.getLogger("uvicorn.access")
    collect = _Collect()
    old_level = access.level
    access.addHandler(collect)
    access.setLevel(level)
    secret = "sk-query-secret-0123456789"
    try:
        for name in ("api_key", "key", "token", "API_KEY", "access_token"):
            with _connect(server.port) as sock:
                sock.sendall(
                    b"GET /health?x=1&"
                    + name.encode()
                    + b"="
                    + secret.encode()
                    + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
                )
                assert _status(_read_all(sock)) == 200
    finally:
        access.removeHandler(collect)
        access.setLevel(old_level)
    logged = "\n".join(collect.lines)
    assert secret not in logged
    if level <= logging.INFO:  # the access log is at INFO: the lines are there, redacted
        assert "/health?x=1&api_key=[redacted]" in logged
        assert len(collect.lines) == 5
    else:
        assert collect.lines == []


def test_the_limits_hold_in_every_worker_of_flowopt_serve(tmp_path: Path) -> None:
    """``--workers 2``: uvicorn imports the guarded protocol by name in each worker
    (``flowopt.gateway.server:WorkerProtocol``), built from the spec's limits."""
    spec = tmp_path / "gw.yaml"
    spec.write_text(
        "name: workers\nbackend: fake\nsteps: [{name: a, prompt: '{input}'}]\n"
        "gateway: {header_timeout: 1, max_headers: 20}\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    cmd = [sys.executable, "-m", "flowopt.cli", "serve", str(spec), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--workers", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        for _ in range(600):  # until a worker answers (start-up: imports, two processes)
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:] if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        extra = b"".join(b"X-H%d: v\r\n" % i for i in range(30))
        for _ in range(4):  # more than one connection: both workers are likely to answer
            with _connect(port) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n" + extra + b"\r\n")
                assert _status(_read_all(sock)) == 431
        with _connect(port) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            assert _status(_read_all(sock)) == 408
    finally:
        proc.terminate()
        proc.wait(30)
