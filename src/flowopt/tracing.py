"""OpenTelemetry spans for every hop, following the GenAI semantic conventions.

Span tree of one run::

    pipeline {name}                  INTERNAL   flowopt.pipeline.*
    └── step {step}                  INTERNAL   flowopt.step.*
        └── middleware {name}        INTERNAL   flowopt.{name}.* (its decisions)
            └── middleware {name}    ...
                └── chat {model}     CLIENT     gen_ai.* (request, response, usage, ttft)

Why our own constants: the GenAI attribute names live only in an *incubating* module of
``opentelemetry-semantic-conventions``, which may rename them in any release. Pinning the
strings here keeps traces stable for the backends that read them (Jaeger, Langfuse, Phoenix).

Content (prompts and completions) is recorded only when capture is switched on, via
:func:`configure_tracing` or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from flowopt.types import Decision, Request, Response

__all__ = [
    "GenAI",
    "configure_from_spec",
    "configure_tracing",
    "content_capture_enabled",
    "get_tracer",
    "record_decisions",
    "record_error",
    "record_request",
    "record_response",
]


class GenAI:
    """GenAI semantic-convention attribute names (as of semconv 1.37)."""

    OPERATION = "gen_ai.operation.name"
    PROVIDER = "gen_ai.provider.name"
    SYSTEM = "gen_ai.system"  # older name, still read by several backends
    REQUEST_MODEL = "gen_ai.request.model"
    REQUEST_TEMPERATURE = "gen_ai.request.temperature"
    REQUEST_TOP_P = "gen_ai.request.top_p"
    REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
    REQUEST_SEED = "gen_ai.request.seed"
    REQUEST_STOP = "gen_ai.request.stop_sequences"
    RESPONSE_MODEL = "gen_ai.response.model"
    RESPONSE_ID = "gen_ai.response.id"
    RESPONSE_FINISH = "gen_ai.response.finish_reasons"
    USAGE_INPUT = "gen_ai.usage.input_tokens"
    USAGE_OUTPUT = "gen_ai.usage.output_tokens"
    TTFT = "gen_ai.response.time_to_first_chunk"
    INPUT_MESSAGES = "gen_ai.input.messages"
    OUTPUT_MESSAGES = "gen_ai.output.messages"
    CONVERSATION_ID = "gen_ai.conversation.id"
    SERVER_ADDRESS = "server.address"
    SERVER_PORT = "server.port"
    ERROR_TYPE = "error.type"


_TRACER_NAME = "flowopt"
_capture_override: bool | None = None


def get_tracer() -> Tracer:
    """The flowopt tracer from the global provider (a no-op until one is installed)."""
    return trace.get_tracer(_TRACER_NAME)


def content_capture_enabled() -> bool:
    if _capture_override is not None:
        return _capture_override
    env = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return env.strip().lower() in ("1", "true", "yes")


def configure_tracing(
    *,
    exporter: str | None = "otlp",
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    service_name: str | None = None,
    capture_content: bool | None = None,
    span_processor: Any = None,
) -> Any:
    """Install a global TracerProvider that exports flowopt's spans.

    ``exporter`` is ``"otlp"`` (OTLP/HTTP; the endpoint and headers default to the standard
    ``OTEL_EXPORTER_OTLP_*`` variables), ``"console"``, or ``None`` (no exporter; pass your
    own ``span_processor``). Returns the provider so callers can ``force_flush()`` it.
    If the application already installed an SDK provider, it is reused and only the
    processor is added.
    """
    global _capture_override
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    if capture_content is not None:
        _capture_override = capture_content
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        provider = current
    else:
        name = service_name or os.environ.get("OTEL_SERVICE_NAME", "flowopt")
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        trace.set_tracer_provider(provider)
    if span_processor is not None:
        provider.add_span_processor(span_processor)
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        kwargs: dict[str, Any] = {}
        if endpoint:
            kwargs["endpoint"] = endpoint
        if headers:
            kwargs["headers"] = dict(headers)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(**kwargs)))
    elif exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


_configured_exporters: set[tuple[str, str | None]] = set()


def configure_from_spec(spec: Any) -> None:
    """Apply a spec's ``tracing:`` block once per (exporter, endpoint) per process, so
    building many pipelines from one spec does not stack exporters."""
    if spec.exporter == "none":
        if spec.capture_content:
            configure_tracing(exporter=None, capture_content=True)
        return
    key = (spec.exporter, spec.endpoint)
    if key in _configured_exporters:
        return
    _configured_exporters.add(key)
    configure_tracing(
        exporter=spec.exporter,
        endpoint=spec.endpoint,
        headers=spec.headers or None,
        service_name=spec.service_name,
        capture_content=spec.capture_content,
    )


def record_request(
    span: Span,
    request: Request,
    *,
    provider: str,
    endpoint: str | None,
    model: str | None = None,
) -> None:
    """Set the GenAI request attributes on a backend span."""
    if not span.is_recording():
        return
    p = request.params
    attrs: dict[str, Any] = {
        GenAI.OPERATION: "chat" if request.kind == "chat" else "text_completion",
        GenAI.PROVIDER: provider,
        GenAI.SYSTEM: provider,
        GenAI.REQUEST_MODEL: request.model or model or "",
        "flowopt.request.id": request.request_id,
        "flowopt.request.stream": request.stream,
    }
    if p.temperature is not None:
        attrs[GenAI.REQUEST_TEMPERATURE] = p.temperature
    if p.top_p is not None:
        attrs[GenAI.REQUEST_TOP_P] = p.top_p
    if p.max_tokens is not None:
        attrs[GenAI.REQUEST_MAX_TOKENS] = p.max_tokens
    if p.seed is not None:
        attrs[GenAI.REQUEST_SEED] = p.seed
    if p.stop:
        attrs[GenAI.REQUEST_STOP] = list(p.stop)
    if request.tenant:
        attrs["flowopt.tenant"] = request.tenant
    if endpoint:
        attrs.update(_server_attrs(endpoint))
    if content_capture_enabled():
        if request.prompt is not None:
            msgs = [{"role": "user", "parts": [{"type": "text", "content": request.prompt}]}]
        else:
            msgs = [
                {"role": m.role, "parts": [{"type": "text", "content": m.content}]}
                for m in request.messages
            ]
        attrs[GenAI.INPUT_MESSAGES] = json.dumps(msgs)
    span.set_attributes(attrs)


def record_response(span: Span, response: Response) -> None:
    """Set the GenAI response attributes (model, finish reason, usage, ttft)."""
    if not span.is_recording():
        return
    attrs: dict[str, Any] = {
        GenAI.RESPONSE_MODEL: response.model,
        GenAI.USAGE_INPUT: response.usage.input_tokens,
        GenAI.USAGE_OUTPUT: response.usage.output_tokens,
    }
    if response.finish_reason:
        attrs[GenAI.RESPONSE_FINISH] = [response.finish_reason]
    if response.ttft_ms is not None:
        attrs[GenAI.TTFT] = response.ttft_ms / 1000.0
        attrs["flowopt.ttft_ms"] = response.ttft_ms
    if response.latency_ms is not None:
        attrs["flowopt.latency_ms"] = response.latency_ms
    if response.cost is not None:
        attrs["flowopt.cost"] = response.cost
    if response.endpoint:
        attrs["flowopt.endpoint"] = response.endpoint
        attrs.update(_server_attrs(response.endpoint))  # the replica that answered
    rid = response.metadata.get("response_id")
    if rid:
        attrs[GenAI.RESPONSE_ID] = str(rid)
    if content_capture_enabled():
        attrs[GenAI.OUTPUT_MESSAGES] = json.dumps(
            [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": response.text}],
                    "finish_reason": response.finish_reason,
                }
            ]
        )
    span.set_attributes(attrs)


def _server_attrs(endpoint: str) -> dict[str, Any]:
    """``server.address``/``server.port`` of one URL; nothing for a list of replicas or a
    non-URL (the replica that answered is set from the response)."""
    if "," in endpoint:
        return {}
    try:
        parts = urlsplit(endpoint)
        out: dict[str, Any] = {}
        if parts.hostname:
            out[GenAI.SERVER_ADDRESS] = parts.hostname
        if parts.port:
            out[GenAI.SERVER_PORT] = parts.port
        return out
    except ValueError:
        return {}


def _attr_value(v: Any) -> Any:
    if isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple) and all(isinstance(x, str | int | float | bool) for x in v):
        return list(v)
    return json.dumps(v, default=str)


def record_decisions(span: Span, decisions: tuple[Decision, ...], middleware: str) -> None:
    """Put one middleware's decisions on its span as ``flowopt.{middleware}.*``."""
    if not span.is_recording():
        return
    for d in decisions:
        if d.middleware != middleware:
            continue
        prefix = f"flowopt.{middleware}"
        span.set_attribute(f"{prefix}.action", d.action)
        for k, v in d.detail.items():
            if v is not None:
                span.set_attribute(f"{prefix}.{k}", _attr_value(v))


def record_error(span: Span, exc: BaseException) -> None:
    if not span.is_recording():
        return
    span.set_attribute(GenAI.ERROR_TYPE, getattr(exc, "code", type(exc).__name__))
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:500]))


def client_kind() -> SpanKind:
    return SpanKind.CLIENT
