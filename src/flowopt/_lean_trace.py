"""Lean spans: the OpenTelemetry SDK's spans, made for a fraction of the SDK's cost.

Why: every middleware hop, backend call and gateway request has a span, and on these
machines the SDK spends ~20 µs on one (``Tracer.start_span`` builds a ``BoundedAttributes``
and a ``BoundedList`` with their locks, a sampler result, a lock per span; ``end`` takes
the lock again and copies the span into a new ``ReadableSpan`` for the processors). A
gateway request with its three spans paid ~0.4 ms of CPU for tracing.

:class:`LeanTracer` wraps a tracer. When the tracer is *exactly* the SDK's
``opentelemetry.sdk.trace.Tracer`` it makes :class:`_LeanSpan` objects itself, following
``Tracer.start_span`` step for step (parent from the given or current context, trace and
span ids from the tracer's id generator, the tracer's sampler, its tracer metrics, resource,
scope and span limits, the span processor's ``on_start``/``_on_ending``/``on_end``), with
what costs and changes nothing removed:

- no locks: a span is written by the task that owns it; Python's dict and attribute writes
  are atomic, and a write racing ``end()`` is dropped or kept, as with the SDK's lock held
  by whichever comes first;
- attributes in a plain dict: values of the types flowopt sets (str, int, float, bool, a
  list of those) are stored as the SDK would store them (lists as tuples, strings cut to
  the limit); anything else goes through the SDK's own ``_clean_attribute_value``. The
  attribute count limit evicts the oldest key, as ``BoundedAttributes`` does;
- events and links lists made on first use;
- the default sampler (``ParentBased(ALWAYS_ON)``) and ``ALWAYS_ON`` decided inline;
  any other sampler is asked through ``should_sample``;
- processor hooks that are known no-ops (the SDK's own ``on_start``/``_on_ending`` of the
  batch and simple processors) are skipped; ``on_end`` is always called;
- the span itself goes to ``on_end`` (it is immutable once ended) instead of a copy;
- the parent read with one ContextVar call (:mod:`flowopt._fast_context`), and the span
  context built as the tuple its constructor builds (checked at import).

The span class is in :mod:`flowopt._lean_span`.

A span with links, a disabled tracer (tracer configurator), a parent context of a wrong
type and an unsampled local parent under the default sampler go to the SDK's own
``start_span``. Any other tracer (a user's ``Tracer`` subclass, a no-op tracer) is
delegated to unchanged. A ``ProxyTracer`` (no SDK provider installed yet) is resolved on
each start as OpenTelemetry does, so a provider installed later is picked up.
``FLOWOPT_LEAN_SPANS=0`` turns all of this off (every tracer is used as given).
``tests/core/test_lean_trace.py`` checks the exported spans against the SDK's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from time import time_ns
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, use_span
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util import types
from opentelemetry.util._decorator import _agnosticcontextmanager

from flowopt._fast_context import current_span
from flowopt._lean_span import (
    _ALWAYS_ON,
    _DEFAULT_ON,
    _FLAGS,
    _INTERNAL,
    _RECORD,
    _SAMPLE,
    _SPAN_MAX,
    _TRACE_MAX,
    _TUPLE_CONTEXT,
    _Hooks,
    _LeanSpan,
    _SdkTracer,
)

__all__ = ["LeanTracer", "lean_tracer"]


class LeanTracer(trace_api.Tracer):
    """A tracer whose spans are :class:`_LeanSpan` when ``tracer`` is the SDK's; any other
    tracer does the work itself. ``wrapped`` is the tracer given."""

    __slots__ = ("_base", "_hooks", "_other", "_sdk")

    def __init__(self, tracer: trace_api.Tracer) -> None:
        self._base = tracer
        self._sdk: sdk_trace.Tracer | None = tracer if type(tracer) is _SdkTracer else None
        # Neither an SDK tracer nor a proxy that may become one: always delegate.
        self._other = self._sdk is None and type(tracer) is not trace_api.ProxyTracer
        self._hooks: _Hooks | None = None

    @property
    def wrapped(self) -> trace_api.Tracer:
        return self._base

    def __getattr__(self, name: str) -> Any:
        """The wrapped tracer's other attributes (``sampler``, ``resource``...)."""
        if name.startswith("__") or name in LeanTracer.__slots__:
            raise AttributeError(name)  # not set yet (copy, unpickling): no recursion
        return getattr(self._base, name)

    def __repr__(self) -> str:
        return f"LeanTracer({self._base!r})"

    def _resolve(self) -> sdk_trace.Tracer | None:
        """The SDK tracer behind a proxy once the global provider is an SDK one (then for
        good: the global provider is set once), else None."""
        if self._other:
            return None
        real = self._base._tracer  # type: ignore[attr-defined]  # ProxyTracer's lookup
        if type(real) is _SdkTracer:
            self._sdk = real
            return real
        if not isinstance(real, trace_api.NoOpTracer):
            self._other = True  # a non-SDK global provider: the proxy forwards to it
        return None

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = _INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        t = self._sdk or self._resolve()
        if t is None or links or not t._tracer_config.is_enabled:
            return (t or self._base).start_span(
                name,
                context=context,
                kind=kind,
                attributes=attributes,
                links=links,
                start_time=start_time,
                record_exception=record_exception,
                set_status_on_exception=set_status_on_exception,
            )
        parent: Any = current_span(context).get_span_context()
        if type(parent) is not SpanContext and not isinstance(parent, SpanContext | None):
            return t.start_span(name, context, kind, attributes, links, start_time)  # raises
        sampler = t.sampler
        fast = sampler is _DEFAULT_ON or sampler is _ALWAYS_ON
        ids = t.id_generator
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = ids.generate_trace_id()
            random_id = ids.is_trace_id_random()
            trace_state = None
        else:
            flags = parent.trace_flags
            if sampler is _DEFAULT_ON and not flags.sampled:
                return t.start_span(name, context, kind, attributes, links, start_time)
            trace_id = parent.trace_id
            random_id = flags.random_trace_id
            trace_state = parent.trace_state
        if fast:
            decision = _SAMPLE
            initial: Any = attributes
        else:
            result = sampler.should_sample(context, trace_id, name, kind, attributes, links)
            decision = result.decision
            initial = result.attributes
            trace_state = result.trace_state
        span_id = ids.generate_span_id()
        flags = _FLAGS[decision is _SAMPLE, bool(random_id)]
        if _TUPLE_CONTEXT:  # SpanContext(trace_id, span_id, False, flags, trace_state)
            valid = 0 < trace_id <= _TRACE_MAX and 0 < span_id <= _SPAN_MAX
            state = DEFAULT_TRACE_STATE if trace_state is None else trace_state
            fields = (trace_id, span_id, False, flags, state, valid)
            span_context = tuple.__new__(SpanContext, fields)  # type: ignore[type-var]
        else:
            span_context = SpanContext(trace_id, span_id, False, flags, trace_state)
        record_end = t._tracer_metrics.start_span(parent, decision)
        if decision is not _SAMPLE and decision is not _RECORD:
            return NonRecordingSpan(span_context)
        hooks = self._hooks
        source = t.span_processor
        if hooks is None or hooks.source is not source:
            hooks = self._hooks = _Hooks(source)
        span = object.__new__(_LeanSpan)
        span._name = name
        span._context = span_context
        span._kind = kind
        span._parent = parent
        span._resource = t.resource
        span._instrumentation_info = t.instrumentation_info
        span._instrumentation_scope = t._instrumentation_scope
        span._limits = t._span_limits
        span._attributes = {}
        span._end_time = None
        span._open = [hooks]
        span._record_end_metrics = record_end
        if not record_exception:
            span._record_exception = False
        if not set_status_on_exception:
            span._set_status_on_exception = False
        if initial:
            span.set_attributes(initial)
        span._start_time = start_time if start_time is not None else time_ns()
        if hooks.sync:
            procs = source._span_processors
            if procs is not hooks.procs:
                hooks.refresh(procs)
            for p in hooks.starting:
                p.on_start(span, parent_context=context)
        else:
            source.on_start(span, parent_context=context)
        return span

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = _INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Any:
        if self._sdk is None and self._resolve() is None:
            # The proxy resolves on each use itself; another tracer keeps its own way.
            return self._base.start_as_current_span(
                name,
                context=context,
                kind=kind,
                attributes=attributes,
                links=links,
                start_time=start_time,
                record_exception=record_exception,
                set_status_on_exception=set_status_on_exception,
                end_on_exit=end_on_exit,
            )
        return self._current(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
            end_on_exit,
        )

    @_agnosticcontextmanager
    def _current(
        self,
        name: str,
        context: Context | None,
        kind: SpanKind,
        attributes: types.Attributes,
        links: Sequence[trace_api.Link] | None,
        start_time: int | None,
        record_exception: bool,
        set_status_on_exception: bool,
        end_on_exit: bool,
    ) -> Iterator[trace_api.Span]:
        """The SDK's ``start_as_current_span``: start a span, make it current."""
        span = self.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        with use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


def lean_tracer(tracer: trace_api.Tracer) -> trace_api.Tracer:
    """``tracer`` behind a :class:`LeanTracer` (unless it is one already, or
    ``FLOWOPT_LEAN_SPANS`` is ``0``/``false``)."""
    if isinstance(tracer, LeanTracer):
        return tracer
    if os.environ.get("FLOWOPT_LEAN_SPANS", "").strip().lower() in ("0", "false", "no"):
        return tracer
    return LeanTracer(tracer)
