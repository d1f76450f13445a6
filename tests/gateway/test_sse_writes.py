"""How a streamed answer is written: the same SSE events, in as few writes as the backend's
reads allow, and never a write held back waiting for I/O.

Driven through the real ASGI app with a fake backend (``FakeBurstBackend``) whose stream
says how many chunks it already holds (``Stream.ready``), the way the vLLM reader does for
the events of one network read; the ASGI ``send`` calls are recorded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from flowopt import pipeline
from flowopt.backends.base import ModelInfo
from flowopt.errors import IncompleteStream
from flowopt.gateway._disconnect import EventStreamResponse
from flowopt.gateway.app import create_app
from flowopt.stream import Stream
from flowopt.testing import FakeBackend
from flowopt.types import Chunk, Request, Response, Usage

BOOM = "boom"


class FakeBurstBackend(FakeBackend):
    """A fake whose stream delivers its chunks in groups ("reads"), saying how many of a
    group are still held; with ``ready=False`` it says nothing (every chunk alone)."""

    provider: ClassVar[str] = "fake"

    def __init__(self, reads: list[list[str]], *, ready: bool = True) -> None:
        super().__init__()
        self.reads = reads
        self.ready = ready

    async def model_info(self) -> ModelInfo:
        return ModelInfo(id="burst")

    async def generate(self, request: Request) -> Response:
        left = [0]
        texts = [t for read in self.reads for t in read if t != BOOM]

        async def gen() -> AsyncIterator[Chunk]:
            i = 0
            for read in self.reads:
                for n, text in enumerate(read):
                    left[0] = len(read) - n - 1
                    if text == BOOM:
                        raise IncompleteStream("cut", endpoint="fake://", partial_text="")
                    last = read is self.reads[-1] and left[0] == 0
                    yield Chunk(text, i, finish_reason="stop" if last else None)
                    i += 1

        final = Response(text="".join(texts), model="burst", usage=Usage(2, len(texts)))
        stream = Stream(gen(), lambda: final, ready=(lambda: left[0]) if self.ready else None)
        return Response(text="", model="burst", finish_reason=None, stream=stream)


async def _serve(backend: FakeBurstBackend) -> list[dict[str, Any]]:
    """One streamed chat request through the app; the body messages it sent."""
    pipe = pipeline("unit", backend=backend, steps=[{"name": "answer", "prompt": "{input}"}])
    app = create_app(pipe)
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": "go"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    sent: list[dict[str, Any]] = []
    requests = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await _never()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gw"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("gw", 80),
        "state": {},
    }
    await app(scope, receive, send)
    await pipe.aclose()
    return [m for m in sent if m["type"] == "http.response.body"]


async def _never() -> None:
    import asyncio

    await asyncio.Event().wait()


def _events(writes: list[dict[str, Any]]) -> list[Any]:
    """The events a client reads, without what differs per request (id, created)."""
    raw = b"".join(w["body"] for w in writes).decode()
    out: list[Any] = []
    for line in raw.split("\n"):
        if line.startswith("data: ") and line != "data: [DONE]":
            obj = json.loads(line[6:])
            obj.pop("id", None)
            obj.pop("created", None)
            out.append(obj)
        elif line == "data: [DONE]":
            out.append("[DONE]")
    return out


async def test_events_of_one_read_go_out_in_one_write_after_the_first() -> None:
    reads = [["a"], ["b", "c", "d"]]
    burst = await _serve(FakeBurstBackend(reads))
    alone = await _serve(FakeBurstBackend(reads, ready=False))
    # the client reads the same events either way
    assert _events(burst) == _events(alone)
    texts = [e["choices"][0]["delta"].get("content") for e in _events(burst)[:-2]]
    assert texts == ["", "a", "b", "c", "d"]
    # role + first token at once; b, c, d together; usage + [DONE] as the body's end
    assert [w["more_body"] for w in burst] == [True, True, False]
    assert burst[0]["body"].count(b"data: ") == 2
    assert burst[1]["body"].count(b"data: ") == 3
    assert burst[2]["body"].endswith(b"data: [DONE]\n\n")
    # without ready: one write per chunk (the first with the role), then usage + [DONE]
    assert [w["more_body"] for w in alone] == [True, True, True, True, False]


async def test_the_first_token_is_never_held_for_the_rest_of_its_read() -> None:
    writes = await _serve(FakeBurstBackend([["a", "b", "c"]]))
    assert writes[0]["body"].count(b"data: ") == 2  # role + "a", not "b" and "c" too
    assert b'"content":"a"' in writes[0]["body"]
    assert writes[1]["body"].count(b"data: ") == 2  # "b" and "c" together


async def test_held_events_go_out_with_the_error_that_ends_the_stream() -> None:
    writes = await _serve(FakeBurstBackend([["a"], ["b", "c", BOOM]]))
    events = _events(writes)
    texts = [
        e["choices"][0]["delta"].get("content")
        for e in events
        if isinstance(e, dict) and e.get("choices")
    ]
    assert texts == ["", "a", "b", "c"]
    assert events[-2]["error"]["code"] == "backend_incomplete" and events[-1] == "[DONE]"
    assert writes[-1]["more_body"] is False


async def test_the_pump_ends_the_body_with_done_or_after_what_follows_it() -> None:
    async def events(parts: list[bytes]) -> AsyncIterator[bytes]:
        for p in parts:
            yield p

    async def run(parts: list[bytes]) -> list[tuple[bytes, bool]]:
        sent: list[tuple[bytes, bool]] = []

        async def send(message: Any) -> None:
            if message["type"] == "http.response.body":
                sent.append((message["body"], message["more_body"]))

        await EventStreamResponse(events(parts))({}, _never_receive, send)  # type: ignore[arg-type]
        return sent

    done = b"data: [DONE]\n\n"
    assert await run([b"data: 1\n\n", done]) == [(b"data: 1\n\n", True), (done, False)]
    # something after [DONE] (not what the gateway writes) still goes out, in order
    assert await run([done, b"x"]) == [(done, True), (b"x", True), (b"", False)]
    assert await run([b"data: 1\n\n"]) == [(b"data: 1\n\n", True), (b"", False)]
    assert await run([]) == [(b"", False)]


async def _never_receive() -> dict[str, Any]:
    await _never()
    raise AssertionError("unreachable")
