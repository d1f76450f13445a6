"""Join the caller's trace: W3C ``traceparent`` in, trace id out.

The incoming headers are read with OpenTelemetry's configured propagator
(``propagate.extract``; W3C Trace Context and Baggage by default), and the gateway's SERVER
span becomes a child of the caller's span, so one request reads as one tree from the
caller through every middleware hop to the vLLM call.

The SERVER span is made by the pipeline's tracer (``Pipeline.tracing.tracer``): the global
provider, or the pipeline's own when its spec names an exporter, so it lands with the
pipeline's spans in one trace either way.

Without an OpenTelemetry SDK installed nothing is recorded, but callers still get a trace
id header: their own (from ``traceparent``), or a fresh random one, so a log line and a
client-side error can be matched either way.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
)

from flowopt.tracing import get_tracer

__all__ = ["TRACE_HEADER", "end_span", "server_span"]

TRACE_HEADER = "x-flowopt-trace-id"


def server_span(
    name: str, headers: Mapping[str, str], route: str, tracer: Tracer | None = None
) -> tuple[Span, str]:
    """Start the SERVER span of one HTTP request with ``tracer`` (the pipeline's; default:
    the global provider's); returns it and its hex trace id."""
    parent = propagate.extract(headers)
    span = (tracer or get_tracer()).start_span(name, context=parent, kind=SpanKind.SERVER)
    ctx = span.get_span_context()
    if not ctx.is_valid:
        # No SDK and no incoming trace: mint ids so the header still identifies the call.
        ctx = SpanContext(
            trace_id=secrets.randbits(128) or 1,
            span_id=secrets.randbits(64) or 1,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.DEFAULT),
        )
        span = NonRecordingSpan(ctx)
    elif span.is_recording():
        span.set_attributes({"http.request.method": "POST", "http.route": route})
    return span, format(ctx.trace_id, "032x")


def end_span(span: Span, status: int) -> None:
    if span.is_recording():
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.end()
