"""Span export is off the request path: a collector that accepts connections and never
answers changes neither whether requests complete nor how much memory spans may hold.

The collector is a real listening socket that accepts and then says nothing (an OTLP/HTTP
export blocks in the exporter's thread until its own timeout); the pipeline is real, with
its own OTLP provider from the spec; the engine is a fake (its speed is not the subject).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from flowopt import pipeline
from flowopt.testing import FakeBackend


@pytest.fixture()
def hung_collector() -> Iterator[str]:
    """``http://127.0.0.1:<port>``: accepts every connection, reads, never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # keep it open, never write a byte

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        server.close()


async def test_a_hung_collector_neither_blocks_requests_nor_grows_memory(
    hung_collector: str,
) -> None:
    pipe = pipeline(
        "hung-collector",
        backend=FakeBackend(),
        steps=[{"name": "a", "prompt": "{input}"}],
        tracing={"exporter": "otlp", "endpoint": hung_collector + "/v1/traces"},
    )
    provider = pipe.tracing.provider
    assert provider is not None
    (processor,) = provider._active_span_processor._span_processors
    queue = processor._batch_processor._queue
    bound = processor._batch_processor._max_queue_size
    n = 1500  # several spans each: more than the queue holds while nothing is exported
    results = [await pipe.ainvoke(f"q{i}") for i in range(n)]
    assert all(r.text == f"echo: q{i}" for i, r in enumerate(results))
    assert queue.maxlen == bound and len(queue) <= bound  # full, bounded, never more
    assert len(queue) > 0  # and the exporter really is stuck (spans are waiting)
