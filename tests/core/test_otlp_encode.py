"""flowopt's direct OTLP span encoder writes the bytes the library's encoder writes
(``encode_spans(...).SerializePartialToString()``), over spans that reach every field:
all attribute types, events, links, statuses, remote parents, trace state, span limits,
several resources and scopes, long and non-ASCII strings. And the exporter that uses it
posts spans a real OTLP receiver reads back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from tests.otlp_receiver import OTLPReceiver, otlp_receiver

from flowopt._otlp_encode import encode_spans_bytes
from flowopt._otlp_export import FastOTLPSpanExporter


def _provider(
    exporter: InMemorySpanExporter, resource: Resource, limits: SpanLimits | None = None
) -> TracerProvider:
    provider = TracerProvider(resource=resource, span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _spans() -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    plain = _provider(memory, Resource.create({"service.name": "flowopt", "n": 3}))
    other = _provider(
        memory,
        Resource({"service.name": "ünïcode", "deploy": "x" * 300}, schema_url="https://s/1"),
        SpanLimits(max_attributes=3, max_events=1, max_links=1),
    )
    t1 = plain.get_tracer("flowopt")
    t2 = plain.get_tracer("other", "1.2.3", schema_url="https://s/2", attributes={"a": 1})
    t3 = other.get_tracer("limited")

    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1"), ("k", "v")]),
    )
    server = t1.start_span(
        "POST /v1/chat/completions",
        context=trace.set_span_in_context(trace.NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
    )
    server.set_attributes(
        {
            "str": "value",
            "empty": "",
            "long": "é" * 5000,
            "true": True,
            "false": False,
            "zero": 0,
            "neg": -42,
            "big": 2**62,
            "float": 0.125,
            "nan_free": -1e300,
            "strs": ["a", "b"],
            "ints": [1, -2, 3],
            "floats": [1.5],
            "bools": [True, False],
            "none_list": [],
        }
    )
    ctx = trace.set_span_in_context(server)
    child = t2.start_span("middleware noop", context=ctx, links=[Link(remote, {"why": "x"})])
    child.add_event("note", {"n": 1, "s": "t"}, timestamp=123)
    child.add_event("bare")
    try:
        raise ValueError("boom ✗")
    except ValueError as exc:
        child.record_exception(exc)
    child.set_status(Status(StatusCode.ERROR, "it broke"))
    child.end()
    ok = t1.start_span("chat smollm2", context=ctx, kind=SpanKind.CLIENT)
    ok.set_status(Status(StatusCode.OK))
    ok.end()
    for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.INTERNAL):
        t1.start_span(f"kind {kind.name}", kind=kind).end()
    limited = t3.start_span("limited", links=[Link(remote), Link(remote)])
    limited.set_attributes({f"k{i}": i for i in range(6)})
    for i in range(3):
        limited.add_event(f"e{i}")
    limited.end()
    server.set_attribute("http.response.status_code", 200)
    server.end()
    spans = list(memory.get_finished_spans())
    # What only a hand-made ReadableSpan carries: a mapping value, bytes, an unset end,
    # no scope, a value the encoder cannot take (dropped by both, with a log line).
    spans.append(
        ReadableSpan(
            name="hand made",
            context=SpanContext(1, 2, is_remote=False),
            attributes={"map": {"x": 1, "y": ["z"]}, "raw": b"\x00\xff", "bad": object()},
            resource=Resource.get_empty(),
            instrumentation_scope=InstrumentationScope("scope", None),
            start_time=5,
        )
    )
    spans.append(
        ReadableSpan(name="no scope", context=SpanContext(3, 4, False), resource=Resource({}))
    )
    return spans


def test_the_bytes_are_the_library_encoders() -> None:
    spans = _spans()
    assert len(spans) == 9
    assert encode_spans_bytes(spans) == encode_spans(spans).SerializePartialToString()
    # and span by span, and for nothing at all
    for span in spans:
        assert encode_spans_bytes([span]) == encode_spans([span]).SerializePartialToString()
    assert encode_spans_bytes([]) == encode_spans([]).SerializePartialToString()


def test_repeated_attributes_come_from_the_memo_unchanged() -> None:
    spans = _spans()
    first = encode_spans_bytes(spans)
    assert encode_spans_bytes(spans) == first  # second pass: pairs from the memo


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with otlp_receiver() as rec:
        yield rec


def test_the_exporter_posts_spans_a_receiver_reads(receiver: OTLPReceiver) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "fast"}))
    exporter = FastOTLPSpanExporter(endpoint=receiver.endpoint)
    assert exporter._parts is not None  # the fast path, not the library's fallback
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("flowopt")
    with tracer.start_as_current_span("outer", kind=SpanKind.SERVER) as outer:
        outer.set_attribute("gen_ai.request.model", "smollm2")
        with tracer.start_as_current_span("inner") as inner:
            inner.set_attribute("n", 7)
    assert provider.force_flush(10_000)
    got: dict[str, Any] = {s["name"]: s for s in receiver.spans}
    assert set(got) == {"outer", "inner"}
    assert got["inner"]["parent_id"] == got["outer"]["span_id"]
    assert got["outer"]["attributes"]["gen_ai.request.model"] == "smollm2"
    assert got["inner"]["attributes"]["n"] == 7
    assert got["outer"]["service"] == "fast"
    provider.shutdown()
