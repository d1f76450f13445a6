"""``flowopt._span_scope.activated`` behaves as OpenTelemetry's ``use_span(span,
end_on_exit=False)``: the span is current inside and not after, an ``Exception`` is
recorded with an ERROR status, a cancellation is not, nothing is swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flowopt._span_scope import activated

Scope = Callable[[trace.Span], AbstractContextManager[Any]]
SCOPES: dict[str, Scope] = {
    "use_span": lambda s: trace.use_span(s, end_on_exit=False),
    "activated": activated,
}


def _run(scope: Scope, raised: BaseException | None) -> tuple[ReadableSpan, bool, bool]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("s")
    inside = False
    try:
        with scope(span):
            inside = trace.get_current_span() is span
            if raised is not None:
                raise raised
    except BaseException as exc:
        assert exc is raised  # propagated unchanged
    after = trace.get_current_span() is span
    assert span.is_recording()  # not ended on exit
    span.end()
    (done,) = exporter.get_finished_spans()
    return done, inside, after


@pytest.mark.parametrize("raised", [None, ValueError("bad value"), asyncio.CancelledError()])
def test_activated_matches_use_span(raised: BaseException | None) -> None:
    results = {name: _run(scope, raised) for name, scope in SCOPES.items()}
    ours, theirs = results["activated"], results["use_span"]
    assert ours[1] is True and ours[2] is False
    assert ours[1:] == theirs[1:]
    assert ours[0].status.status_code == theirs[0].status.status_code
    assert ours[0].status.description == theirs[0].status.description
    assert [e.name for e in ours[0].events] == [e.name for e in theirs[0].events]
    assert [dict(e.attributes or {}).get("exception.message") for e in ours[0].events] == [
        dict(e.attributes or {}).get("exception.message") for e in theirs[0].events
    ]
    if isinstance(raised, ValueError):
        assert ours[0].status.status_code == trace.StatusCode.ERROR
        assert [e.name for e in ours[0].events] == ["exception"]
    else:
        assert ours[0].events == ()
