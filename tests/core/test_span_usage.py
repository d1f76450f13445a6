"""Server-reported prefix-cache hits reach the backend span."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flowopt.tracing import GenAI, record_response
from flowopt.types import Response, Usage


def _attrs(usage: Usage) -> dict[str, object]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("chat m")
    record_response(span, Response(text="x", model="m", usage=usage))
    span.end()
    (finished,) = exporter.get_finished_spans()
    return dict(finished.attributes or {})


def test_cached_prompt_tokens_are_on_the_span_when_the_server_reports_them() -> None:
    attrs = _attrs(Usage(input_tokens=100, output_tokens=5, cached_input_tokens=96))
    assert attrs[GenAI.USAGE_INPUT] == 100 and attrs[GenAI.USAGE_CACHED_INPUT] == 96
    assert GenAI.USAGE_CACHED_INPUT not in _attrs(Usage(input_tokens=100, output_tokens=5))
