"""The OTLP/HTTP span exporter flowopt installs, with the span encoding done by
:mod:`flowopt._otlp_encode` instead of protobuf message objects.

Why a subclass: the exporter's ``export`` calls its module's ``encode_spans`` directly, and
replacing that function process-wide would change exporters flowopt does not own (the
application's). This class repeats ``export``'s few steps (the shutdown check, the
exporter's own metrics, the size limit, the POST) around the faster encoder, for the
exporters flowopt makes itself (``tracing: {exporter: otlp}``, ``configure_tracing``,
``OTEL_TRACES_EXPORTER=otlp``). Everything else (endpoint, headers, compression, retries,
timeouts, TLS) is the library's. Should a future release rename what ``export`` relies
on, the library's own ``export`` runs instead, unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from flowopt._otlp_encode import encode_spans_bytes

__all__ = ["FastOTLPSpanExporter"]

_log = logging.getLogger("flowopt.tracing")
_NEEDS = ("_shutdown", "_metrics", "_max_request_size", "_client")


class FastOTLPSpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` (OTLP/HTTP, protobuf) with a direct span encoder; same
    constructor, same bytes on the wire."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        has = all(hasattr(self, name) for name in _NEEDS)
        self._parts = _library_parts() if has else None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._parts is None:
            return super().export(spans)
        too_large, too_large_error, status_attr = self._parts
        if self._shutdown:
            _log.warning("exporter already shut down, ignoring a batch of %d spans", len(spans))
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = encode_spans_bytes(spans)
            except Exception as error:  # as the library: a batch that does not encode fails
                _log.error("failed to encode a span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if too_large(data, self._max_request_size):
                _log.warning(
                    "dropping a span batch: %d bytes exceeds max_request_size %d",
                    len(data),
                    self._max_request_size,
                )
                result.error = too_large_error(
                    f"span batch of {len(data)} bytes exceeds max_request_size "
                    f"{self._max_request_size} bytes"
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = (
                    {status_attr: sent.status_code} if sent.status_code is not None else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


def _library_parts() -> tuple[Any, Any, str] | None:
    """The library helpers ``export`` uses, or None when this release lacks them."""
    try:
        from opentelemetry.exporter.otlp.proto.http._common import (
            RequestPayloadTooLargeError,
            _is_request_too_large,
        )
        from opentelemetry.semconv.attributes.http_attributes import (
            HTTP_RESPONSE_STATUS_CODE,
        )
    except ImportError:
        return None
    return _is_request_too_large, RequestPayloadTooLargeError, HTTP_RESPONSE_STATUS_CODE
