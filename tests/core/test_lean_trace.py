"""``flowopt._lean_trace.LeanTracer`` exports the spans the SDK's tracer exports.

Each test runs one scenario twice, once through a plain SDK tracer and once through the
lean one, each on its own provider with the same resource, sampler, limits and a
deterministic id generator, and compares what reached an ``InMemorySpanExporter`` (through
a simple processor, or a batch processor and ``force_flush``), down to the OTLP bytes
where the scenario fixes every timestamp.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from flowopt._lean_trace import LeanTracer, _LeanSpan, lean_tracer
from flowopt._span_scope import activated
from flowopt.tracing import PipelineTracing, record_error, record_request
from flowopt.types import Params, Request

T0 = 1_700_000_000_000_000_000


class FakeSequentialIds(IdGenerator):
    """A fake id generator: 1, 2, 3... so two runs get the same ids."""

    def __init__(self) -> None:
        self.n = 0

    def generate_span_id(self) -> int:
        self.n += 1
        return self.n

    def generate_trace_id(self) -> int:
        self.n += 1
        return self.n << 64


def _provider(
    batch: bool, sampler: Sampler | None = None, limits: SpanLimits | None = None
) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "lean-test"}),
        sampler=sampler,
        id_generator=FakeSequentialIds(),
        span_limits=limits,
    )
    provider.add_span_processor(
        BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    )
    return provider, exporter


def _both(
    scenario: Callable[[trace.Tracer], None],
    batch: bool = False,
    sampler: Sampler | None = None,
    limits: SpanLimits | None = None,
) -> tuple[tuple[ReadableSpan, ...], tuple[ReadableSpan, ...]]:
    """The spans ``scenario`` exports with the SDK tracer and with the lean one."""
    out = []
    for lean in (False, True):
        provider, exporter = _provider(batch, sampler, limits)
        tracer = provider.get_tracer("flowopt", "1.0")
        scenario(LeanTracer(tracer) if lean else tracer)
        assert provider.force_flush()
        out.append(exporter.get_finished_spans())
        provider.shutdown()
    return out[0], out[1]


def _view(span: ReadableSpan) -> dict[str, Any]:
    """Everything an exporter reads, timestamps aside."""
    ctx = span.context
    assert ctx is not None and span.start_time is not None and span.end_time is not None
    assert span.start_time <= span.end_time
    return {
        "name": span.name,
        "kind": span.kind,
        "trace_id": ctx.trace_id,
        "span_id": ctx.span_id,
        "flags": int(ctx.trace_flags),
        "trace_state": ctx.trace_state.to_header(),
        "parent": None if span.parent is None else (span.parent.span_id, span.parent.is_remote),
        "attributes": dict(span.attributes or {}),
        "attribute_order": list(span.attributes or {}),
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
        "events": [(e.name, dict(e.attributes or {})) for e in span.events],
        "links": [(lk.context.span_id, dict(lk.attributes or {})) for lk in span.links],
        "status": (span.status.status_code, span.status.description),
        "resource": dict(span.resource.attributes),
        "scope": (span.instrumentation_scope.name, span.instrumentation_scope.version)
        if span.instrumentation_scope
        else None,
    }


REQUEST = Request.chat("hi", model="smollm2", params=Params(temperature=0.2, stop=("\n",)))


def _hops(tracer: trace.Tracer) -> None:
    """What a gateway request does: a SERVER span under a remote parent, middleware spans
    made current with ``activated``, a backend CLIENT span with GenAI attributes, an
    error recorded on it, a step span through ``start_as_current_span``."""
    remote = trace.SpanContext(7 << 64, 99, True, trace.TraceFlags(trace.TraceFlags.SAMPLED))
    parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    server = tracer.start_span("POST /v1/chat", parent, SpanKind.SERVER, {"http.route": "/x"})
    with (
        activated(server),
        tracer.start_as_current_span("step answer", attributes={"n": 1}) as step,
    ):
        step.set_attribute("flowopt.step", "answer")
        mw = tracer.start_span("middleware cache")
        with activated(mw):
            chat = tracer.start_span("chat smollm2", kind=SpanKind.CLIENT)
            record_request(chat, REQUEST, provider="vllm", endpoint="http://h:8011/v1")
            chat.set_attributes({"finish": ["stop"], "ints": (1, 2), "none": None})
            chat.set_attributes({"nested": {"a": [1, "b"]}, "": "bad key", "b": b"x"})
            record_error(chat, ValueError("backend said no"))
            chat.end()
            chat.end()  # exported once, as by the SDK
            chat.add_event("late")  # ignored
        mw.set_attributes({"flowopt.cache.action": "miss", "flowopt.cache.score": 0.5})
        mw.update_name("middleware cache2")
        mw.set_status(Status(StatusCode.OK))
        mw.set_status(StatusCode.ERROR, "ignored: OK is final")
        mw.add_link(remote, {"why": "follows"})
        mw.end()
        mw.set_attribute("late", 1)  # ignored on an ended span, as by the SDK
        linked = tracer.start_span("linked", links=[trace.Link(remote, {"k": "v"})])
        linked.end()
    server.set_attributes({"http.response.status_code": 200})
    server.end()


@pytest.mark.parametrize("batch", [False, True], ids=["simple", "batch"])
def test_lean_spans_export_as_sdk_spans(batch: bool) -> None:
    sdk, lean = _both(_hops, batch=batch)
    assert [s.name for s in sdk] == [
        "chat smollm2",
        "middleware cache2",
        "linked",
        "step answer",
        "POST /v1/chat",
    ]
    assert [_view(s) for s in lean] == [_view(s) for s in sdk]
    assert sum(isinstance(s, _LeanSpan) for s in lean) == 4  # "linked" went to the SDK
    chat = _view(lean[0])
    assert chat["parent"][0] == lean[1].context.span_id  # type: ignore[union-attr]
    assert chat["attributes"]["gen_ai.request.stop_sequences"] == ("\n",)
    assert chat["events"][0][0] == "exception" and chat["status"][0] is StatusCode.ERROR
    assert all(s.context.trace_id == 7 << 64 for s in lean)  # type: ignore[union-attr]


def _timed(tracer: trace.Tracer) -> None:
    """Every timestamp fixed, so the OTLP encoding can be compared byte for byte."""
    root = tracer.start_span("root", start_time=T0, attributes={"a": "b", "n": [1, 2]})
    ctx = trace.set_span_in_context(root)
    child = tracer.start_span("child", ctx, SpanKind.CLIENT, start_time=T0 + 1)
    child.set_attributes({"x": 1.5, "y": True, "s": "long string value"})
    child.add_event("tick", {"k": 1}, timestamp=T0 + 2)
    try:
        raise KeyError("missing")
    except KeyError as exc:
        child.record_exception(exc, {"extra": "1"}, timestamp=T0 + 3, escaped=True)
    child.set_status(Status(StatusCode.ERROR, "boom"))
    child.end(T0 + 4)
    root.end(T0 + 5)


@pytest.mark.parametrize("batch", [False, True], ids=["simple", "batch"])
def test_otlp_encoding_is_byte_identical(batch: bool) -> None:
    sdk, lean = _both(_timed, batch=batch)
    assert len(sdk) == 2
    assert encode_spans(lean).SerializeToString() == encode_spans(sdk).SerializeToString()
    assert [s.to_json() for s in lean] == [s.to_json() for s in sdk]


def test_span_limits_keep_and_drop_as_the_sdk() -> None:
    limits = SpanLimits(max_span_attributes=3, max_span_attribute_length=4, max_events=1)

    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span("s", attributes={"a": "abcdefgh", "b": ["xyzxyz", "q"]})
        span.set_attributes({"c": 1, "d": 2, "a": "again"})
        span.set_attribute("e", 3)
        span.add_event("one")
        span.add_event("two")
        span.end()

    sdk, lean = _both(scenario, limits=limits)
    assert [_view(s) for s in lean] == [_view(s) for s in sdk]
    assert _view(lean[0])["dropped"] == (3, 1, 0)
    assert dict(lean[0].attributes or {}) == {"d": 2, "a": "agai", "e": 3}


@pytest.mark.parametrize(
    "sampler",
    [ALWAYS_OFF, TraceIdRatioBased(0.0), ParentBased(TraceIdRatioBased(0.0))],
    ids=["always_off", "ratio_0", "parent_ratio_0"],
)
@pytest.mark.parametrize("batch", [False, True], ids=["simple", "batch"])
def test_unsampled_spans_are_not_exported(sampler: Sampler, batch: bool) -> None:
    sdk, lean = _both(_timed, batch=batch, sampler=sampler)
    assert sdk == () and lean == ()
    provider, _ = _provider(batch, sampler)
    span = LeanTracer(provider.get_tracer("t")).start_span("s")
    assert not span.is_recording() and not span.get_span_context().trace_flags.sampled
    assert isinstance(span, trace.NonRecordingSpan)


def test_unsampled_local_parent_is_not_recorded() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        remote = trace.SpanContext(5 << 64, 3, False, trace.TraceFlags(0))
        parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        span = tracer.start_span("child", parent)
        assert not span.is_recording()
        span.end()
        tracer.start_span("root").end()

    sdk, lean = _both(scenario)
    assert [_view(s) for s in lean] == [_view(s) for s in sdk]
    assert [s.name for s in lean] == ["root"]


def test_a_provider_installed_later_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before any SDK provider, the global tracer is a ProxyTracer: the lean tracer made
    from it then must use a provider installed afterwards, as the proxy does."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    tracer = lean_tracer(trace.get_tracer("flowopt"))
    assert isinstance(tracer, LeanTracer)
    assert type(tracer.wrapped) is trace.ProxyTracer
    before = tracer.start_span("before")
    assert not before.is_recording()
    before.end()
    with tracer.start_as_current_span("before too") as span:
        assert not span.is_recording()
    provider, exporter = _provider(batch=False)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    with tracer.start_as_current_span("after", kind=SpanKind.SERVER) as outer:
        tracer.start_span("inner").end()
    assert isinstance(outer, _LeanSpan)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["inner", "after"]
    assert spans[0].parent is not None and spans[0].parent.span_id == outer.context.span_id
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached again


class FakeTracer(trace.Tracer):
    """A fake third-party tracer: records what it is asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:  # type: ignore[override]
        self.calls.append((name, kwargs))
        return trace.INVALID_SPAN

    def start_as_current_span(self, name: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.calls.append((f"current {name}", kwargs))
        return trace.use_span(trace.INVALID_SPAN)


def test_other_tracers_are_delegated_to() -> None:
    fake = FakeTracer()
    tracer = copy.copy(LeanTracer(fake))  # a copy (no recursion through __getattr__)
    assert tracer.wrapped is fake and tracer.calls is fake.calls  # other attributes: fake's
    assert tracer.start_span("a", kind=SpanKind.CLIENT) is trace.INVALID_SPAN
    with tracer.start_as_current_span("b", end_on_exit=False) as span:
        assert span is trace.INVALID_SPAN
    assert [c[0] for c in fake.calls] == ["a", "current b"]
    assert fake.calls[0][1]["kind"] is SpanKind.CLIENT
    assert fake.calls[1][1]["end_on_exit"] is False
    # A subclass of the SDK tracer is someone else's: its own start_span makes the span.
    provider, exporter = _provider(batch=False)
    sub = type("SubTracer", (type(provider.get_tracer("t")),), {})
    base = provider.get_tracer("t")
    base.__class__ = sub
    made = LeanTracer(base).start_span("sub")
    made.end()
    assert not isinstance(made, _LeanSpan)
    assert [s.name for s in exporter.get_finished_spans()] == ["sub"]


def test_pipeline_tracing_uses_lean_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(PipelineTracing.default().tracer, LeanTracer)
    monkeypatch.setenv("FLOWOPT_LEAN_SPANS", "0")
    assert not isinstance(PipelineTracing.default().tracer, LeanTracer)


def test_processor_hooks_run_as_in_the_sdk() -> None:
    """on_start sees the started span (with its sampler attributes) and the context
    given; _on_ending and on_end see the ended span; a processor added later is called."""
    seen: list[tuple[str, Any]] = []

    class FakeRecorder(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: context.Context | None = None) -> None:
            seen.append(("start", (span.name, span.is_recording(), parent_context)))

        def _on_ending(self, span: Any) -> None:
            seen.append(("ending", span.end_time is not None))

        def on_end(self, span: ReadableSpan) -> None:
            seen.append(("end", span.name))

    provider, _ = _provider(batch=False)
    tracer = LeanTracer(provider.get_tracer("t"))
    tracer.start_span("first").end()
    provider.add_span_processor(FakeRecorder(InMemorySpanExporter()))
    ctx = context.Context()
    tracer.start_span("second", ctx).end()
    assert seen == [("start", ("second", True, ctx)), ("ending", True), ("end", "second")]


@pytest.mark.parametrize("fallback", ["span_context_constructor", "runtime_context_calls"])
def test_the_fallbacks_export_the_same_spans(
    fallback: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paths taken when a shortcut's check fails (another SpanContext layout, another
    runtime context than the ContextVar one) give the same spans too."""
    import flowopt._fast_context
    import flowopt._lean_trace

    assert flowopt._lean_trace._TUPLE_CONTEXT and flowopt._fast_context._var is not None
    if fallback == "span_context_constructor":
        monkeypatch.setattr(flowopt._lean_trace, "_TUPLE_CONTEXT", False)
    else:
        monkeypatch.setattr(flowopt._fast_context, "_var", None)
    sdk, lean = _both(_hops)
    assert len(sdk) == 5
    assert [_view(s) for s in lean] == [_view(s) for s in sdk]


class FakeRecordOnlySampler(Sampler):
    """A fake sampler: records, does not sample, adds an attribute and a trace state."""

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, *a: Any, **k: Any
    ) -> Any:
        from opentelemetry.sdk.trace.sampling import Decision, SamplingResult

        state = trace.TraceState([("vendor", "x")])
        return SamplingResult(Decision.RECORD_ONLY, {"sampler.rate": 0.5}, state)

    def get_description(self) -> str:
        return "FakeRecordOnlySampler"


class FakeCollector(SpanProcessor):
    """A fake processor: keeps every span it is given at its end."""

    def __init__(self) -> None:
        self.seen: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.seen.append(span)


def test_record_only_spans_reach_on_end_unsampled() -> None:
    """A sampler's RECORD_ONLY: a recording, unsampled span with the sampler's attributes
    and trace state; processors' on_end sees it (exporters behind the SDK's processors
    drop it)."""
    ended: list[list[ReadableSpan]] = []
    for lean in (False, True):
        collector = FakeCollector()
        provider, exporter = _provider(False, FakeRecordOnlySampler())
        provider.add_span_processor(collector)
        tracer = provider.get_tracer("t")
        _timed(LeanTracer(tracer) if lean else tracer)
        assert exporter.get_finished_spans() == ()
        ended.append(collector.seen)
    assert len(ended[0]) == 2
    assert [_view(s) for s in ended[1]] == [_view(s) for s in ended[0]]
    assert _view(ended[1][0])["trace_state"] == "vendor=x"
    assert _view(ended[1][0])["flags"] & 1 == 0
