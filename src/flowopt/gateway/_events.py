"""The life of one generation exchange and its server-sent events.

Kept apart from the routes (:mod:`flowopt.gateway.app`): :class:`Exchange` is the
book-keeping every answer ends in exactly once (span, metrics, in-flight count), and the
event generators turn a flowopt answer (a backend stream, a cached whole answer, a graph
run) into OpenAI's streamed chunks, tool-call deltas included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span

from flowopt.errors import RejectedError
from flowopt.gateway._wire import (
    DONE,
    Call,
    TextChunks,
    chat_chunk,
    completion_chunk,
    error_event,
    usage_chunk,
)
from flowopt.gateway.errors import HTTPProblem, error_kind, problem_from
from flowopt.gateway.models import Target
from flowopt.gateway.tracing import TRACE_HEADER, end_span
from flowopt.messages import ToolCallDelta
from flowopt.result import Result, TokenEvent
from flowopt.types import Chunk, Response, Usage

if TYPE_CHECKING:
    from flowopt.gateway.app import Gateway
    from flowopt.pipeline import Pipeline

__all__ = [
    "Exchange",
    "after",
    "backend_events",
    "graph_events",
    "graph_response",
    "sse_chunk",
    "stream_end",
    "stream_failed",
]

_log = logging.getLogger("flowopt.gateway")


class Exchange:
    """Book-keeping of one generation request: span, metrics, headers; finished once."""

    __slots__ = ("done", "gw", "headers", "model", "route", "span", "started")

    def __init__(self, gw: Gateway, route: str, span: Span, trace_id: str, rid: str) -> None:
        self.gw = gw
        self.route = route
        self.span = span
        self.started = time.perf_counter()
        self.model = "unknown"
        self.headers = {TRACE_HEADER: trace_id, "x-request-id": rid}
        self.done = False
        gw.metrics.in_flight.inc()

    def _close(self, status: int) -> None:
        self.done = True
        self.gw.metrics.in_flight.dec()
        end_span(self.span, status)

    def ok(self, response: Response) -> None:
        if self.done:
            return
        self.gw.metrics.observe_answer(
            self.route, self.model, response, time.perf_counter() - self.started
        )
        self._close(200)

    def failed(self, exc: BaseException) -> HTTPProblem:
        problem = problem_from(exc)
        if self.done:
            return problem
        kind = error_kind(exc)
        if problem.status >= 500 and not isinstance(exc, HTTPProblem | RejectedError):
            _log.error(
                "request %s failed: %s",
                self.headers["x-request-id"],
                kind,
                exc_info=exc if kind == "internal" else None,
            )
        if isinstance(exc, RejectedError):
            self.gw.metrics.shed.labels(exc.reason).inc()
        self.gw.metrics.observe_error(self.route, self.model, problem.status, kind)
        if self.span.is_recording():
            from flowopt.tracing import record_error

            record_error(self.span, exc)
        self._close(problem.status)
        return problem

    def left(self) -> None:
        if self.done:
            return
        self.gw.metrics.disconnects.labels(self.route).inc()
        self.gw.metrics.observe_error(self.route, self.model, 499, "client_disconnected")
        self._close(499)


def sse_chunk(call: Call, model: str, chunk: Chunk) -> bytes:
    """One streamed piece as an SSE event (chat or completion shape), with its choice
    index and the engine's unmodelled fields."""
    if call.request.kind == "chat":
        return chat_chunk(
            call,
            model,
            text=chunk.text,
            finish_reason=chunk.finish_reason,
            logprobs=chunk.logprobs,
            tool_calls=chunk.tool_calls,
            reasoning=chunk.reasoning,
            choice=chunk.choice,
            passthrough=chunk.passthrough,
        )
    return completion_chunk(
        call,
        model,
        text=chunk.text,
        finish_reason=chunk.finish_reason,
        logprobs=chunk.logprobs,
        choice=chunk.choice,
        passthrough=chunk.passthrough,
    )


def _whole(final: Response) -> list[Chunk]:
    """A complete answer as stream pieces: one per choice, tool calls whole."""
    return [
        Chunk(
            c.text,
            i,
            c.logprobs or (),
            c.finish_reason,
            tuple(ToolCallDelta.whole(j, t) for j, t in enumerate(c.tool_calls)),
            c.reasoning_content or "",
            c.index,
        )
        for i, c in enumerate(final.choices)
    ]


async def backend_events(
    call: Call, target: Target, response: Response, ex: Exchange, head: bytes = b""
) -> AsyncGenerator[bytes, None]:
    """The SSE events of one backend answer: its chunks (tool-call deltas and logprobs
    in full chunks, plain text through the pre-built encoder), then usage and [DONE].

    ``head`` (the role events) goes out with the first event, in one write. After the
    first, events the backend delivered in one network read (``Stream.ready``) are
    written together: the client gets the same events, in fewer writes, and none waits
    for I/O that the ones before it did not (the first always goes out alone, at once).
    Usage and ``[DONE]`` are one write.
    """
    chat = call.request.kind == "chat"
    model = target.model
    stream = response.stream
    first = True
    held: list[bytes] = [head] if head else []
    try:
        if stream is None:  # answered whole (e.g. a cache hit): one chunk
            final = response
            ex.gw.metrics.child(ex.gw.metrics.ttft, ex.route, model).observe(
                time.perf_counter() - ex.started
            )
            for piece in _whole(final):
                held.append(sse_chunk(call, model, piece))
        else:
            plain = TextChunks(call, model, chat=chat)
            sent = False
            async for chunk in stream:
                if first and (chunk.text or chunk.tool_calls):
                    first = False
                    ex.gw.metrics.child(ex.gw.metrics.ttft, ex.route, model).observe(
                        time.perf_counter() - ex.started
                    )
                if chunk.logprobs or chunk.tool_calls or chunk.reasoning or chunk.choice:
                    held.append(sse_chunk(call, model, chunk))
                else:
                    held.append(plain(chunk.text, chunk.finish_reason, chunk.passthrough))
                if sent and stream.ready:
                    continue  # the next event is already here: one write for both
                sent = True
                data = held[0] if len(held) == 1 else b"".join(held)
                held.clear()
                yield data
            done = stream.response
            assert done is not None
            final = done
        held.extend(stream_end(call, model, final, chat=chat))
        end = b"".join(held)
        held.clear()
        yield end
        ex.ok(final)
    except Exception as exc:
        held.extend(stream_failed(ex, exc))
        yield b"".join(held)
    finally:
        if stream is not None:
            await stream.aclose()


async def graph_events(
    pipe: Pipeline, call: Call, target: Target, ex: Exchange, run: dict[str, Any]
) -> AsyncGenerator[bytes, None]:
    """The SSE events of a graph run: the answer steps' tokens, then usage and [DONE]."""
    model = target.model
    runs = pipe.astream(**run)
    streamed = False
    try:
        result: Result | None = None
        async for ev in runs:
            if isinstance(ev, TokenEvent) and ev.step in pipe.answer_steps and ev.text:
                if not streamed:
                    streamed = True
                    ex.gw.metrics.child(ex.gw.metrics.ttft, ex.route, model).observe(
                        time.perf_counter() - ex.started
                    )
                yield chat_chunk(call, model, text=ev.text)
            elif isinstance(ev, Result):
                result = ev
        assert result is not None
        final = graph_response(result, model)
        if not streamed and final.text:  # the last step was a function step
            yield chat_chunk(call, model, text=final.text)
        yield chat_chunk(call, model, finish_reason="stop")
        for event in stream_end(call, model, final, chat=True):
            yield event
        ex.ok(final)
    except Exception as exc:
        for event in stream_failed(ex, exc):
            yield event
    finally:
        await runs.aclose()  # type: ignore[attr-defined]


async def after(head: bytes, events: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """``events`` with ``head`` written in front of the first one (or alone if none)."""
    try:
        async for data in events:
            if head:
                data, head = head + data, b""
            yield data
        if head:
            yield head
    finally:
        await events.aclose()


def stream_end(call: Call, model: str, final: Response, *, chat: bool) -> list[bytes]:
    """The last events of a successful stream: usage if the client asked, then [DONE]."""
    events = (
        [usage_chunk(call, model, final.usage, chat=chat, passthrough=final.passthrough)]
        if call.include_usage
        else []
    )
    events.append(DONE)
    return events


def stream_failed(ex: Exchange, exc: Exception) -> list[bytes]:
    """A failure after the 200 was sent: an OpenAI error event, then [DONE]; records it."""
    problem = ex.failed(exc)
    return [error_event(problem.body()), DONE]


def graph_response(result: Result, model: str) -> Response:
    last = result.hops[-1].response if result.hops else None
    return Response(
        text=result.text,
        model=model,
        usage=result.usage if result.hops else Usage(),
        finish_reason="stop",
        decisions=result.decisions,
        latency_ms=result.latency_ms,
        backend=last.backend if last else None,
        cached=bool(last and last.cached),
    )
