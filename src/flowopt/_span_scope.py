"""Make a span current for a block: OpenTelemetry's ``use_span(span, end_on_exit=False)``,
as a slotted class instead of a generator context manager.

Why: every middleware hop, every backend call and every gateway request enters a span
this way, and ``use_span`` is a ``@contextmanager`` generator (a generator object, its
frames and the ``contextlib`` wrapper per entry). This class does the same three things
(attach the span to the context, detach it, and on an ``Exception`` record it on the span
and set an ERROR status, exactly as ``use_span`` does) with none of that machinery, and
attaches through :mod:`flowopt._fast_context` (one ContextVar call each way).
``tests/core/test_span_scope.py`` checks it against ``use_span``.
"""

from __future__ import annotations

from types import TracebackType

from opentelemetry.trace import Span, Status, StatusCode

from flowopt._fast_context import attach_span, detach

__all__ = ["activated"]


class activated:
    """``with activated(span):`` makes ``span`` current; it is not ended on exit."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        self._token = attach_span(self._span)  # context.attach(set_span_in_context(span))
        return self._span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        detach(self._token)
        # As use_span: an Exception (not a bare BaseException such as a cancellation or
        # GeneratorExit) is recorded as an event and sets the status; it propagates.
        if isinstance(exc, Exception) and self._span.is_recording():
            self._span.record_exception(exc)
            self._span.set_status(
                Status(status_code=StatusCode.ERROR, description=f"{type(exc).__name__}: {exc}")
            )
