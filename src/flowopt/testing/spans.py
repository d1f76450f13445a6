"""SpanCapture: install an in-memory exporter and read finished spans back."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["SpanCapture"]


class SpanCapture:
    """Collect spans in memory. Installs an SDK TracerProvider if none is set (OTel allows
    setting the global provider once per process, so the capture shares it)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.provider = provider

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def clear(self) -> None:
        self.exporter.clear()

    def by_name(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name.startswith(prefix)]

    def tree(self, trace_id: int | None = None) -> dict[str, Any]:
        """``{span_name: [children...]}`` nested dicts from the root(s), for assertions
        and for printing."""
        spans = [s for s in self.spans() if trace_id is None or s.context.trace_id == trace_id]
        ids = {s.context.span_id for s in spans}
        children: dict[int | None, list[ReadableSpan]] = {}
        for s in spans:
            parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
            children.setdefault(parent, []).append(s)

        def build(parent: int | None) -> list[dict[str, Any]]:
            out = []
            for s in sorted(children.get(parent, []), key=lambda x: x.start_time or 0):
                ms = ((s.end_time or 0) - (s.start_time or 0)) / 1e6
                out.append({"name": s.name, "ms": ms, "children": build(s.context.span_id)})
            return out

        return {"roots": build(None)}
