"""OpenTelemetry's current-span lookups and context attach/detach, without the layers.

Why: ``trace.get_current_span()`` is four Python calls (``get_value``, ``get_current``,
the runtime context's ``get_current``, the ContextVar), ``set_span_in_context`` plus
``attach`` four more, and every span start and every ``activated`` block pays them. With
OpenTelemetry's default runtime context (``ContextVarsRuntimeContext``, which nearly every
process uses) they come down to one ``ContextVar`` call each. Under any other runtime
context (``OTEL_PYTHON_CONTEXT``) these functions call OpenTelemetry's own.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace import INVALID_SPAN, Span
from opentelemetry.trace.propagation import _SPAN_KEY

__all__ = ["attach_span", "current_span", "detach"]

_runtime: Any = getattr(context_api, "_RUNTIME_CONTEXT", None)
_var: ContextVar[Context] | None = (
    _runtime._current_context if type(_runtime) is ContextVarsRuntimeContext else None
)
# OpenTelemetry's logger and message for a failed detach, as context.detach logs it.
_log = logging.getLogger(context_api.__name__)


def current_span(context: Context | None = None) -> Span:
    """``opentelemetry.trace.get_current_span(context)``."""
    if context is None:
        context = _var.get() if _var is not None else context_api.get_current()
    span = context.get(_SPAN_KEY)
    if span is None or not isinstance(span, Span):
        return INVALID_SPAN
    return span


def attach_span(span: Span) -> Token[Context]:
    """``context.attach(trace.set_span_in_context(span))``."""
    if _var is None:
        return context_api.attach(context_api.set_value(_SPAN_KEY, span))
    values = _var.get().copy()
    values[_SPAN_KEY] = span
    return _var.set(Context(values))


def detach(token: Token[Context]) -> None:
    """``context.detach(token)``: a failure is logged, never raised."""
    if _var is None:
        context_api.detach(token)
        return
    try:
        _var.reset(token)
    except Exception:
        _log.exception("Failed to detach context")
