"""The span of :mod:`flowopt._lean_trace`: an SDK ``Span`` (and so a ``ReadableSpan`` for
processors and exporters) without the SDK's per-span locks and bounded containers, and
the small helpers its tracer uses (trace flags, span contexts, processor hooks). Why and
how it matches the SDK: see :mod:`flowopt._lean_trace`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from time import time_ns
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import _clean_attribute_value
from opentelemetry.context import Context
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util import types

__all__: list[str] = []

# The SDK's logger, so warnings read as they always did.
_log = logging.getLogger(sdk_trace.__name__)

_SdkTracer = sdk_trace.Tracer
_SyncMulti = sdk_trace.SynchronousMultiSpanProcessor
_DEFAULT_ON = sampling.DEFAULT_ON
_ALWAYS_ON = sampling.ALWAYS_ON
_SAMPLE = sampling.Decision.RECORD_AND_SAMPLE
_RECORD = sampling.Decision.RECORD_ONLY
_INTERNAL = SpanKind.INTERNAL
_UNSET = Status(StatusCode.UNSET)
_OK = StatusCode.OK
# TraceFlags by (sampled, random trace id): immutable ints, shared.
_FLAGS = {
    (s, r): TraceFlags(
        (TraceFlags.SAMPLED if s else TraceFlags.DEFAULT)
        | (TraceFlags.RANDOM_TRACE_ID if r else TraceFlags.DEFAULT)
    )
    for s in (False, True)
    for r in (False, True)
}
# Values stored as given (the SDK's cleaning returns them unchanged); str is cut to length.
_SCALARS = frozenset({bool, int, float, bytes, type(None)})
_PLAIN = _SCALARS | {str}
# Processor hooks that do nothing: skipping them changes nothing.
_NOOP_HOOKS = frozenset(
    {
        sdk_trace.SpanProcessor.on_start,
        sdk_trace.SpanProcessor._on_ending,
        BatchSpanProcessor.on_start,
        BatchSpanProcessor._on_ending,
        SimpleSpanProcessor.on_start,
        SimpleSpanProcessor._on_ending,
    }
)


_TRACE_MAX = (1 << 128) - 1
_SPAN_MAX = (1 << 64) - 1


def _same_layout() -> bool:
    """Whether ``SpanContext(t, s, False, flags, state)`` is the tuple
    ``(t, s, False, flags, state or DEFAULT_TRACE_STATE, is_valid)``: then the lean tracer
    builds that tuple itself, saving the constructor's call on every span."""
    flags = _FLAGS[True, True]
    for t, s in ((1, 2), (0, 2), (1 << 128, 1), (3, 1 << 64)):
        valid = 0 < t <= _TRACE_MAX and 0 < s <= _SPAN_MAX
        mine = tuple.__new__(SpanContext, (t, s, False, flags, DEFAULT_TRACE_STATE, valid))  # type: ignore[type-var]
        theirs = SpanContext(t, s, False, flags, None)
        if tuple(mine) != tuple(theirs) or mine.is_valid is not theirs.is_valid:
            return False
        if mine.trace_state is not theirs.trace_state:
            return False
    return True


_TUPLE_CONTEXT = _same_layout()


def _hook_needed(proc: Any, hook: str) -> bool:
    """Whether ``proc.<hook>`` may do something (patched on the instance, or not one of
    the SDK's no-op methods)."""
    overridden = hook in getattr(proc, "__dict__", {})
    return overridden or getattr(type(proc), hook, None) not in _NOOP_HOOKS


class _Hooks:
    """The span processor of one SDK tracer, with its no-op hooks weeded out. Rebuilt when
    a processor is added (the SDK replaces its tuple then)."""

    __slots__ = ("ending", "procs", "source", "starting", "sync")

    def __init__(self, source: Any) -> None:
        self.source = source
        self.sync = type(source) is _SyncMulti
        self.procs: tuple[Any, ...] | None = None
        self.starting: tuple[Any, ...] = ()
        self.ending: tuple[Any, ...] = ()

    def refresh(self, procs: tuple[Any, ...]) -> None:
        self.starting = tuple(p for p in procs if _hook_needed(p, "on_start"))
        self.ending = tuple(p for p in procs if _hook_needed(p, "_on_ending"))
        self.procs = procs


class _LeanSpan(sdk_trace.Span):
    """An SDK ``Span`` (so also a ``ReadableSpan`` for processors and exporters) without
    the SDK's per-span locks and bounded containers. Made only by :class:`LeanTracer`,
    which fills the slots (``__init__`` is never called)."""

    __slots__ = (
        "_attributes",
        "_context",
        "_end_time",
        "_instrumentation_info",
        "_instrumentation_scope",
        "_kind",
        "_limits",
        "_name",
        "_open",
        "_parent",
        "_record_end_metrics",
        "_resource",
        "_start_time",
    )

    # Written only on the rare paths (an event, a link, a status, a dropped attribute,
    # a non-default flag): class defaults until then, one store less per span each.
    _dropped = 0
    _events: Any = ()
    _links: Any = ()
    _status = _UNSET
    _record_exception = True
    _set_status_on_exception = True

    _attributes: dict[str, Any]  # type: ignore[assignment]
    _open: list[_Hooks]  # [hooks] until ended: end() pops it, atomically, once
    _limits: sdk_trace.SpanLimits

    @property
    def dropped_attributes(self) -> int:
        return self._dropped

    def _put(self, key: str, value: Any) -> None:
        """``BoundedAttributes._setitem_locked``: a new key goes last; a full dict drops
        its oldest key."""
        attrs = self._attributes
        if key in attrs:
            del attrs[key]
        maxlen = self._limits.max_span_attributes
        if maxlen is not None and len(attrs) >= maxlen:
            if maxlen == 0:
                self._dropped += 1
                return
            _log.warning(
                "Attributes dict is full. Dropping the oldest key-value pair from attributes "
                "to make space for the new key-value pair.",
            )
            del attrs[next(iter(attrs))]
            self._dropped += 1
        attrs[key] = value

    def _clean(self, key: Any, value: Any) -> None:
        """One attribute the fast path does not take, stored as ``BoundedAttributes``
        would store it (a bad key dropped and counted, the value cleaned by the SDK)."""
        maxlen = self._limits.max_span_attributes
        if maxlen == 0:
            self._dropped += 1
            return
        cleaned = _clean_attribute_value({key: value}, self._limits.max_span_attribute_length)
        self._dropped += 1 - len(cleaned)
        for k, v in cleaned.items():
            self._put(k, v)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end_time is not None:
            _log.warning("Setting attribute on ended span.")
            return
        maxvl = self._limits.max_span_attribute_length
        for key, value in attributes.items():
            t = type(value)
            if type(key) is not str or not key:
                self._clean(key, value)
            elif t in _SCALARS or (t is str and (maxvl is None or len(value) <= maxvl)):  # type: ignore[arg-type]
                self._put(key, value)
            elif (t is list or t is tuple) and all(
                type(x) in (_PLAIN if maxvl is None else _SCALARS)
                for x in value  # type: ignore[union-attr]
            ):
                self._put(key, tuple(value))  # type: ignore[arg-type]
            else:
                self._clean(key, value)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self.set_attributes({key: value})

    def _ended(self, what: str) -> bool:
        if self._end_time is None:
            return False
        _log.warning("Tried calling %s on an ended span.", what)
        return True

    def _add_event(self, event: sdk_trace.EventBase) -> None:
        if self._ended("_add_event"):
            return
        if type(self._events) is tuple:
            self._events = BoundedList(self._limits.max_events)
        self._events.append(event)  # type: ignore[attr-defined]

    def _add_link(self, link: trace_api.Link) -> None:
        if self._ended("_add_link"):
            return
        if type(self._links) is tuple:
            self._links = BoundedList(self._limits.max_links)
        self._links.append(link)  # type: ignore[attr-defined]

    def update_name(self, name: str) -> None:
        if not self._ended("update_name"):
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._ended("set_status"):
            return
        # As the SDK: OK is final; UNSET never overwrites.
        if isinstance(status, Status):
            if self._status.status_code is _OK or status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                _log.warning(
                    "Description %s ignored. Use either `Status` or `(StatusCode, Description)`",
                    description,
                )
            self._status = status
        elif isinstance(status, StatusCode):
            if self._status.status_code is _OK or status is StatusCode.UNSET:
                return
            self._status = Status(status, description)

    def start(self, start_time: int | None = None, parent_context: Context | None = None) -> None:
        _log.warning("Calling start() on a started span.")

    def end(self, end_time: int | None = None) -> None:
        try:
            hooks = self._open.pop()  # one winner when two threads end it (the SDK's lock)
        except IndexError:
            _log.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        if self._record_end_metrics:
            self._record_end_metrics()
        if hooks.sync:
            procs = hooks.source._span_processors
            if procs is not hooks.procs:
                hooks.refresh(procs)
            for p in hooks.ending:
                p._on_ending(self)
            for p in procs:
                p.on_end(self)
        else:
            hooks.source._on_ending(self)
            hooks.source.on_end(self)

    def _readable_span(self) -> sdk_trace.ReadableSpan:
        return self
