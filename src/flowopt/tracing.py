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

Tracing settings belong to the pipeline, not the process. Each pipeline holds a
:class:`PipelineTracing` (its tracer, whether it records content, whether middleware get
spans), made from its spec's ``tracing:`` block when it is built. Building a pipeline never
changes process-wide state:

- Exporters are the application's business: :func:`configure_tracing` (or the CLI and the
  gateway, through :func:`configure_from_env`) installs the global provider, which every
  pipeline whose spec names no exporter uses (a no-op until one is installed). A spec that
  names one (``tracing: {exporter: otlp}``) gets its *own* provider instead, shared by the
  pipelines of this process that ask for the same exporter, endpoint, headers and service
  name, flushed when such a pipeline closes and shut down at exit.
- Content (prompts and completions) is recorded on a pipeline's spans only when *that*
  pipeline's spec says ``capture_content: true``; when the spec does not say, the process
  default decides: ``configure_tracing(capture_content=...)`` if the application called
  it, else ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``, else off. The
  default is read when the pipeline is built.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from flowopt._lean_trace import lean_tracer
from flowopt.messages import Message, ToolCall
from flowopt.types import Decision, Request, Response

if TYPE_CHECKING:
    from flowopt.spec import TracingSpec

__all__ = [
    "CAPTURE_ENV",
    "GenAI",
    "PipelineTracing",
    "client_kind",
    "configure_from_env",
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
    USAGE_CACHED_INPUT = "gen_ai.usage.cache_read.input_tokens"  # server's prefix cache hits
    TTFT = "gen_ai.response.time_to_first_chunk"
    INPUT_MESSAGES = "gen_ai.input.messages"
    OUTPUT_MESSAGES = "gen_ai.output.messages"
    CONVERSATION_ID = "gen_ai.conversation.id"
    SERVER_ADDRESS = "server.address"
    SERVER_PORT = "server.port"
    ERROR_TYPE = "error.type"
    TOOL_NAME = "gen_ai.tool.name"
    TOOL_CALL_ID = "gen_ai.tool.call.id"
    TOOL_TYPE = "gen_ai.tool.type"


_TRACER_NAME = "flowopt"
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# Set only by the application, through configure_tracing(capture_content=...); a pipeline
# never writes it. It is a default, read when a pipeline is built: a spec's own
# capture_content wins.
_app_capture_default: bool | None = None


def get_tracer() -> Tracer:
    """The flowopt tracer from the global provider (a no-op until one is installed), behind
    :class:`flowopt._lean_trace.LeanTracer`: the same spans as the SDK's for a fraction of
    their cost, and a provider installed later is still picked up."""
    return lean_tracer(trace.get_tracer(_TRACER_NAME))


def content_capture_enabled() -> bool:
    """The process default for content capture, used by pipelines whose spec does not say:
    ``configure_tracing(capture_content=...)`` if the application called it, else
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, else off."""
    if _app_capture_default is not None:
        return _app_capture_default
    env = os.environ.get(CAPTURE_ENV, "")
    return env.strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True, slots=True)
class PipelineTracing:
    """One pipeline's tracing settings, fixed when it is built.

    ``tracer`` makes every span of the pipeline (pipeline, step, middleware, backend; the
    gateway's SERVER span too, so they form one tree). ``capture_content`` says whether
    backend spans carry ``gen_ai.input.messages`` / ``gen_ai.output.messages``.
    ``middleware_spans``: one span per middleware hop. ``provider`` is the pipeline's own
    SDK provider when its spec named an exporter, else None (the global provider).
    """

    tracer: Tracer
    capture_content: bool = False
    middleware_spans: bool = True
    provider: Any = None

    @classmethod
    def default(cls) -> PipelineTracing:
        """The global provider's tracer and the process default for capture: what a stack
        built without a pipeline (tests, benchmarks, a middleware's own calls) uses."""
        return cls(get_tracer(), content_capture_enabled())

    @classmethod
    def from_spec(cls, spec: TracingSpec) -> PipelineTracing:
        """The settings of a spec's ``tracing:`` block. ``exporter: none`` (the default)
        uses the global provider; ``otlp``/``console`` a provider of the pipeline's own."""
        capture = (
            content_capture_enabled() if spec.capture_content is None else spec.capture_content
        )
        if spec.exporter == "none":
            return cls(get_tracer(), capture, spec.middleware_spans)
        provider = _spec_provider(
            spec.exporter, spec.endpoint, spec.headers or {}, spec.service_name
        )
        tracer = lean_tracer(provider.get_tracer(_TRACER_NAME))
        return cls(tracer, capture, spec.middleware_spans, provider)

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        """Export what the pipeline's own provider still holds (no-op on the global one,
        which belongs to the application)."""
        if self.provider is None:
            return True
        return bool(self.provider.force_flush(timeout_millis))


def _processor(exporter: str, endpoint: str | None, headers: Mapping[str, str] | None) -> Any:
    """A span processor for one exporter: OTLP/HTTP behind a batch processor, console
    behind a simple one."""
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    if exporter == "otlp":
        # the library's OTLP/HTTP exporter with a faster span encoder (same bytes)
        from flowopt._otlp_export import FastOTLPSpanExporter as OTLPSpanExporter

        kwargs: dict[str, Any] = {}
        if endpoint:
            kwargs["endpoint"] = endpoint
        if headers:
            kwargs["headers"] = dict(headers)
        return BatchSpanProcessor(OTLPSpanExporter(**kwargs))
    if exporter == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter())
    raise ValueError(f"unknown tracing exporter {exporter!r} (use 'otlp' or 'console')")


def _new_provider(service_name: str | None) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    name = service_name or os.environ.get("OTEL_SERVICE_NAME", "flowopt")
    # shutdown_on_exit (the default) registers an atexit hook that flushes and stops it.
    return TracerProvider(resource=Resource.create({"service.name": name}))


_SpecKey = tuple[str, str | None, tuple[tuple[str, str], ...], str | None]
_spec_providers: dict[_SpecKey, Any] = {}
_spec_providers_lock = threading.Lock()


def _spec_provider(
    exporter: str, endpoint: str | None, headers: Mapping[str, str], service_name: str | None
) -> Any:
    """The provider for one spec exporter, made once per process and shared by every
    pipeline asking for the same (exporter, endpoint, headers, service name), so building
    many pipelines from one spec does not stack exporters. Never the global provider."""
    key: _SpecKey = (exporter, endpoint, tuple(sorted(headers.items())), service_name)
    with _spec_providers_lock:
        provider = _spec_providers.get(key)
        if provider is None:
            provider = _new_provider(service_name)
            provider.add_span_processor(_processor(exporter, endpoint, headers))
            _spec_providers[key] = provider
        return provider


def configure_tracing(
    *,
    exporter: str | None = "otlp",
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    service_name: str | None = None,
    capture_content: bool | None = None,
    span_processor: Any = None,
) -> Any:
    """Install a global TracerProvider that exports flowopt's spans (an application-level
    call: pipelines never make it).

    ``exporter`` is ``"otlp"`` (OTLP/HTTP; the endpoint and headers default to the standard
    ``OTEL_EXPORTER_OTLP_*`` variables), ``"console"``, or ``None`` (no exporter; pass your
    own ``span_processor``). Returns the provider so callers can ``force_flush()`` it.
    If the application already installed an SDK provider, it is reused and only the
    processor is added. ``capture_content`` sets the process default for content capture
    (over the environment variable) for pipelines built afterwards whose spec does not say.
    """
    global _app_capture_default
    from opentelemetry.sdk.trace import TracerProvider

    if capture_content is not None:
        _app_capture_default = capture_content
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        provider = current
    else:
        provider = _new_provider(service_name)
        trace.set_tracer_provider(provider)
    if span_processor is not None:
        provider.add_span_processor(span_processor)
    if exporter is not None:
        provider.add_span_processor(_processor(exporter, endpoint, headers))
    return provider


def configure_from_env() -> Any:
    """What ``flowopt run|serve|demo`` do at start: install the global exporter named by
    the standard ``OTEL_TRACES_EXPORTER`` (``otlp`` or ``console``; unset or ``none``:
    nothing), unless the application (or ``opentelemetry-instrument``) already installed an
    SDK provider. Returns the provider installed, or None."""
    from opentelemetry.sdk.trace import TracerProvider

    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    known = [n for n in names if n in ("otlp", "console")]
    unknown = [n for n in names if n and n not in ("otlp", "console", "none")]
    if unknown:
        logging.getLogger("flowopt.tracing").warning(
            "OTEL_TRACES_EXPORTER: flowopt installs only 'otlp' and 'console', not %s",
            unknown,
        )
    if not known or isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    provider = configure_tracing(exporter=known[0])
    for name in known[1:]:
        provider.add_span_processor(_processor(name, None, None))
    return provider


def record_request(
    span: Span,
    request: Request,
    *,
    provider: str,
    endpoint: str | None,
    model: str | None = None,
    capture_content: bool = False,
) -> None:
    """Set the GenAI request attributes on a backend span; the messages too when
    ``capture_content`` (the pipeline's setting: see :class:`PipelineTracing`)."""
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
    if capture_content:
        if request.prompt is not None:
            msgs = [{"role": "user", "parts": [{"type": "text", "content": request.prompt}]}]
        else:
            msgs = [_input_message(m) for m in request.messages]
        attrs[GenAI.INPUT_MESSAGES] = json.dumps(msgs)
    span.set_attributes(attrs)


def record_response(span: Span, response: Response, *, capture_content: bool = False) -> None:
    """Set the GenAI response attributes (model, finish reason, usage, ttft); the answer
    too when ``capture_content``."""
    if not span.is_recording():
        return
    attrs: dict[str, Any] = {
        GenAI.RESPONSE_MODEL: response.model,
        GenAI.USAGE_INPUT: response.usage.input_tokens,
        GenAI.USAGE_OUTPUT: response.usage.output_tokens,
    }
    if response.usage.cached_input_tokens:
        attrs[GenAI.USAGE_CACHED_INPUT] = response.usage.cached_input_tokens
    finish = _finish_reason(response)
    if finish:
        attrs[GenAI.RESPONSE_FINISH] = [finish]
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
    if capture_content:
        parts: list[dict[str, Any]] = []
        if response.text or not response.tool_calls:
            parts.append({"type": "text", "content": response.text})
        parts.extend(_call_part(c) for c in response.tool_calls)
        attrs[GenAI.OUTPUT_MESSAGES] = json.dumps(
            [{"role": "assistant", "parts": parts, "finish_reason": finish}]
        )
    span.set_attributes(attrs)


def _finish_reason(response: Response) -> str | None:
    """The finish reason on the span: ``tool_calls`` for an answer that calls tools, even
    when the server said ``stop`` (vLLM does for some tool parsers): a trace query for
    tool-calling turns must find them all."""
    if response.tool_calls and response.finish_reason in (None, "stop"):
        return "tool_calls"
    return response.finish_reason


def _call_part(call: ToolCall) -> dict[str, Any]:
    """A GenAI ``tool_call`` part; arguments as JSON values when they parse."""
    try:
        args: Any = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        args = call.arguments
    return {"type": "tool_call", "id": call.id, "name": call.name, "arguments": args}


def _input_message(m: Message) -> dict[str, Any]:
    """One input message as GenAI parts: text, the tool calls of an assistant turn, or
    the ``tool_call_response`` of a tool turn."""
    if m.role == "tool":
        part = {"type": "tool_call_response", "id": m.tool_call_id, "response": m.text}
        return {"role": "tool", "parts": [part]}
    parts: list[dict[str, Any]] = []
    if m.text or not m.tool_calls:
        parts.append({"type": "text", "content": m.text})
    parts.extend(_call_part(c) for c in m.tool_calls)
    return {"role": m.role, "parts": parts}


@lru_cache(maxsize=256)
def _server_attrs(endpoint: str) -> Mapping[str, Any]:
    """``server.address``/``server.port`` of one URL; nothing for a list of replicas or a
    non-URL (the replica that answered is set from the response). Memoised: two spans
    a request read the same few endpoints, and URL parsing is most of the cost. Callers
    copy it (``attrs.update``), never change it."""
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
        attrs: dict[str, Any] = {f"{prefix}.action": d.action}
        for k, v in d.detail.items():
            if v is not None:
                attrs[f"{prefix}.{k}"] = _attr_value(v)
        span.set_attributes(attrs)  # one call: one ended-check, one pass


def record_error(span: Span, exc: BaseException) -> None:
    if not span.is_recording():
        return
    span.set_attribute(GenAI.ERROR_TYPE, getattr(exc, "code", type(exc).__name__))
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:500]))


def client_kind() -> SpanKind:
    return SpanKind.CLIENT
