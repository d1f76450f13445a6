"""Spans to OTLP protobuf bytes without building protobuf message objects.

Why: the OTLP exporter encodes finished spans on the batch processor's thread, in the
same process as the requests, and its encoder (``encode_spans``) builds a Python protobuf
object per span, attribute and value before serialising them: ~250 µs of CPU for the three
spans of one gateway request on the development machine, more than the bare proxy the
gateway is measured against spends on the whole request, and it holds the GIL the event
loop needs. This module writes the same bytes directly (protobuf's wire format is a few
tags and lengths), with the encoded attribute pairs that repeat on every request (model,
provider, operation, route...) memoised.

The output is the bytes ``encode_spans(spans).SerializePartialToString()`` gives
(``tests/core/test_otlp_encode.py`` compares them), fields in field-number order and
proto3 defaults left out exactly where the reference encoder leaves them out. An
attribute whose value cannot be encoded is skipped, as the reference encoder does (it
logs and drops that one key).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["encode_spans_bytes"]

_log = logging.getLogger("flowopt.tracing")

_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_VARINTS = [bytes([i]) for i in range(128)]
_MEMO_MAX = 8192
_pair_memo: dict[tuple[bytes, str, type, Any], bytes] = {}
_key_memo: dict[str, bytes] = {}


def _varint(n: int) -> bytes:
    if n < 128:
        return _VARINTS[n] if n >= 0 else _varint(n + (1 << 64))
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, bytes."""
    n = len(payload)
    return tag + (_VARINTS[n] if n < 128 else _varint(n)) + payload


def _str(tag: bytes, s: str) -> bytes:
    return _ld(tag, s.encode("utf-8")) if s else b""


def _any(value: Any) -> bytes:
    """An ``AnyValue`` message's content (the oneof is written even for a default)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _ld(b"\x0a", value.encode("utf-8"))
    if isinstance(value, int):
        if not -(1 << 63) <= value < (1 << 63):
            raise ValueError(f"int out of range: {value}")
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _ld(b"\x3a", value)
    if isinstance(value, Sequence):
        return _ld(b"\x2a", b"".join(_ld(b"\x0a", _any(v)) for v in value))
    if isinstance(value, Mapping):
        return _ld(b"\x32", b"".join(_ld(b"\x0a", _pair(str(k), v)) for k, v in value.items()))
    raise TypeError(f"invalid type {type(value)} of value {value!r}")


def _pair(key: str, value: Any) -> bytes:
    """A ``KeyValue`` message's content."""
    head = _key_memo.get(key)
    if head is None:
        head = _str(b"\x0a", key)
        if len(_key_memo) < _MEMO_MAX:
            _key_memo[key] = head
    return head + _ld(b"\x12", _any(value))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated ``KeyValue`` fields; a pair that cannot be encoded is skipped."""
    if not attributes:
        return b""
    out = []
    memo = _pair_memo
    for key, value in attributes.items():
        kind = type(value)
        memo_key = (tag, key, kind, value) if kind in (str, bool, int) else None
        encoded = memo.get(memo_key) if memo_key is not None else None
        if encoded is None:
            try:
                encoded = _ld(tag, _pair(key, value))
            except Exception as exc:  # the reference encoder also drops just this key
                _log.warning("span attribute %r not exported: %s", key, exc)
                continue
            if memo_key is not None:
                if len(memo) >= _MEMO_MAX:
                    memo.clear()
                memo[memo_key] = encoded
        out.append(encoded)
    return b"".join(out)


def _flags(context: Any) -> bytes:
    # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK (0x100), | IS_REMOTE (0x200) for a remote one
    return _FIXED32(0x300 if context is not None and context.is_remote else 0x100)


def _span(span: Any) -> bytes:
    ctx = span.get_span_context()
    parent = span.parent
    parts = [
        b"\x0a\x10",
        ctx.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        ctx.span_id.to_bytes(8, "big"),
    ]
    state = ctx.trace_state
    if state:
        parts.append(_str(b"\x1a", ",".join(f"{k}={v}" for k, v in state.items())))
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts.append(_str(b"\x2a", span.name))
    parts.append(b"\x30" + _VARINTS[span.kind.value + 1])
    if span.start_time:
        parts.append(b"\x39" + _FIXED64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _FIXED64(span.end_time))
    parts.append(_attributes(b"\x4a", span.attributes))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        body = b"\x09" + _FIXED64(event.timestamp) if event.timestamp else b""
        body += _str(b"\x12", event.name) + _attributes(b"\x1a", event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        parts.append(_ld(b"\x5a", body))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        lc = link.context
        body = b"\x0a\x10" + lc.trace_id.to_bytes(16, "big")
        body += b"\x12\x08" + lc.span_id.to_bytes(8, "big")
        body += _attributes(b"\x22", link.attributes)
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        parts.append(_ld(b"\x6a", body + b"\x35" + _flags(lc)))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    status = span.status
    body = _str(b"\x12", status.description or "")
    if status.status_code.value:
        body += b"\x18" + _VARINTS[status.status_code.value]
    parts.append(_ld(b"\x7a", body))
    parts.append(b"\x85\x01" + _flags(parent))
    return b"".join(parts)


_resource_memo: dict[int, tuple[Any, bytes]] = {}
_scope_memo: dict[int, tuple[Any, bytes]] = {}


def _resource(resource: Any) -> bytes:
    hit = _resource_memo.get(id(resource))
    if hit is not None and hit[0] is resource:
        return hit[1]
    encoded = _ld(b"\x0a", _attributes(b"\x0a", resource.attributes))
    if len(_resource_memo) >= 64:
        _resource_memo.clear()
    _resource_memo[id(resource)] = (resource, encoded)
    return encoded


def _scope(scope: Any) -> bytes:
    hit = _scope_memo.get(id(scope))
    if hit is not None and hit[0] is scope:
        return hit[1]
    body = b""
    if scope is not None:
        body = _str(b"\x0a", scope.name) + _str(b"\x12", scope.version or "")
        body += _attributes(b"\x1a", scope.attributes)
    encoded = _ld(b"\x0a", body)
    if len(_scope_memo) >= 256:
        _scope_memo.clear()
    _scope_memo[id(scope)] = (scope, encoded)
    return encoded


def encode_spans_bytes(spans: Sequence[Any]) -> bytes:
    """``ExportTraceServiceRequest`` bytes for ``spans`` (SDK ``ReadableSpan`` objects),
    grouped by resource, then instrumentation scope, in first-seen order."""
    # Grouped by identity first (a Resource hashes by JSON-dumping its attributes, and a
    # provider's spans share one Resource, a tracer's one scope), then equal resources and
    # scopes merged, as the reference encoder groups them: a few comparisons a batch.
    by_id: dict[tuple[int, int], tuple[Any, Any, list[bytes]]] = {}
    for span in spans:
        resource = span.resource
        scope = span.instrumentation_scope or None
        entry = by_id.get((id(resource), id(scope)))
        if entry is None:
            entry = by_id[(id(resource), id(scope))] = (resource, scope, [])
        entry[2].append(_ld(b"\x12", _span(span)))
    groups: list[tuple[Any, list[tuple[Any, list[bytes]]]]] = []
    for resource, scope, encoded_spans in by_id.values():
        into = next((g for g in groups if g[0] is resource or g[0] == resource), None)
        if into is None:
            into = (resource, [])
            groups.append(into)
        same = next((e for e in into[1] if e[0] is scope or e[0] == scope), None)
        if same is None:
            into[1].append((scope, encoded_spans))
        else:
            same[1].extend(encoded_spans)
    out = []
    for resource, by_scope in groups:
        body = [_resource(resource)]
        for scope, encoded in by_scope:
            scope_body = _scope(scope) + b"".join(encoded)
            if scope is not None and scope.schema_url:
                scope_body += _str(b"\x1a", scope.schema_url)
            body.append(_ld(b"\x12", scope_body))
        if resource.schema_url:
            body.append(_str(b"\x1a", resource.schema_url))
        out.append(_ld(b"\x0a", b"".join(body)))
    return b"".join(out)
