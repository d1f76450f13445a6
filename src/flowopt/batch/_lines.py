"""Batch input lines in, output and error lines out, in OpenAI's Batch API file format.

Input: one JSON object per line, ``{"custom_id", "method": "POST", "url", "body"}``.
Output: ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``.

Why a malformed line is a line, not a failed job: OpenAI refuses a whole file for one bad
line, which turns a typo on line 9,000 into a lost night. Here each bad line becomes an
error-file entry naming its line number and what is wrong, and the good lines run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENDPOINTS",
    "BadLine",
    "GoodLine",
    "error_record",
    "output_record",
    "parse_lines",
]

ENDPOINTS: dict[str, str] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
}
"""The endpoints a batch may target, and the kind of request each line is."""
MAX_CUSTOM_ID = 512


@dataclass(frozen=True, slots=True)
class GoodLine:
    """A line that can run: its 1-based number, ``custom_id`` and request body (JSON text)."""

    number: int
    custom_id: str
    body: str


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that cannot run, and why (with its ``custom_id`` when one could be read)."""

    number: int
    custom_id: str | None
    message: str


def _check(obj: Any, endpoint: str, seen: dict[str, int]) -> str:
    """The problem with one decoded line, or '' when it can run."""
    if not isinstance(obj, dict):
        return "a line must be a JSON object"
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return "'custom_id' must be a non-empty string"
    if len(cid) > MAX_CUSTOM_ID:
        return f"'custom_id' is longer than {MAX_CUSTOM_ID} characters"
    if cid in seen:
        return f"custom_id {cid!r} repeats line {seen[cid]}; each line needs its own"
    method = obj.get("method", "POST")
    if method != "POST":
        return f"'method' must be 'POST', got {str(method)[:20]!r}"
    url = obj.get("url")
    if url != endpoint:
        return f"'url' must be the batch's endpoint {endpoint!r}, got {str(url)[:60]!r}"
    body = obj.get("body")
    if not isinstance(body, dict):
        return "'body' must be a JSON object (the request to send)"
    if body.get("stream"):
        return "'body.stream' must be false: a batch line's answer is written whole"
    return ""


def parse_lines(data: bytes, endpoint: str) -> Iterator[GoodLine | BadLine]:
    """Every non-blank line of an input file, checked. A repeated ``custom_id`` is bad on
    its second appearance (the first runs)."""
    seen: dict[str, int] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            yield BadLine(number, None, f"line {number} is not valid JSON: {exc}"[:300])
            continue
        problem = _check(obj, endpoint, seen)
        cid = obj.get("custom_id") if isinstance(obj, dict) else None
        cid = cid if isinstance(cid, str) and cid else None
        if problem:
            yield BadLine(number, cid, f"line {number}: {problem}")
            continue
        assert cid is not None
        seen[cid] = number
        yield GoodLine(number, cid, json.dumps(obj["body"], ensure_ascii=False))


def _request_id() -> str:
    return "batch_req_" + uuid.uuid4().hex


def output_record(custom_id: str, status: int, body: Any, request_id: str) -> str:
    """One output (or failed-request) line: the answer as the endpoint would have sent it."""
    return json.dumps(
        {
            "id": _request_id(),
            "custom_id": custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": body},
            "error": None,
        },
        ensure_ascii=False,
    )


def error_record(custom_id: str | None, code: str, message: str, line: int | None) -> str:
    """One error-file line for a line that never got an answer (malformed, cancelled,
    expired); ``line`` is the input line number."""
    return json.dumps(
        {
            "id": _request_id(),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message, "line": line},
        },
        ensure_ascii=False,
    )
