"""A request body from the wire to plain JSON values the rest of the gateway can trust.

Why one module: every hostile body the gateway ever turned into a 500 got past the JSON
decoder with a value nothing downstream expected — a lone UTF-16 surrogate (``"\\ud800"``,
legal JSON, not encodable as UTF-8, so the backend payload failed to serialise), nesting
deep enough to reach Python's recursion limit, ``NaN``/``Infinity`` (not JSON, but
``json`` accepts them), an integer past 64 bits (``orjson`` cannot write it back). So the
body is checked here, once, before any field is read: a value that could not travel on to
the model server is a 400 naming where it is (``param: "messages[0].content"``).

The check costs almost nothing on the usual path: ``orjson`` itself refuses surrogates,
non-finite numbers, big integers and nesting past 1,024, so a body it accepts only needs
the depth walk; only a body it refuses is parsed again with ``json`` (for its error, or
for the values ``json`` accepts) and walked in full.

Content types: only JSON (``application/json``, ``application/*+json``, any parameters)
is parsed. A ``text/plain`` or form body is refused with 415, and so is a body with no
``Content-Type``: those are what a web page may POST cross-site without a CORS
preflight, so a keyless gateway on loopback would otherwise answer any site the user
visits.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from flowopt.gateway._disconnect import ClientLeft
from flowopt.gateway.errors import HTTPProblem

if TYPE_CHECKING:
    from starlette.requests import Request as HTTPRequest

__all__ = [
    "MAX_DEPTH",
    "MAX_ECHO",
    "check_content_type",
    "clip",
    "parse_json_body",
    "read_body",
    "read_json",
]

# Nesting allowed in a request body. OpenAI's own limit for a structured-output schema is
# 10 levels (of objects; ~20 of JSON), a tool call's arguments rarely reach 10: 64 leaves
# room for any real request and stays far below Python's recursion limit (1,000), which
# every recursive walk downstream (freezing, hashing, serialising) would otherwise reach.
MAX_DEPTH = 64
# Longest client value quoted back in an error message (characters).
MAX_ECHO = 200
_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson writes back to the model server


def clip(value: object, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error never echoes a megabyte."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        return text[:limit] + f"... ({len(text)} characters)"
    return text


def check_content_type(content_type: str | None) -> None:
    """Refuse (415) a body that does not say it is JSON."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    shown = clip(media, 60) if media else "none"
    raise HTTPProblem(
        415,
        f"the request body must be JSON (Content-Type: application/json), got {shown}",
        code="unsupported_media_type",
        param="Content-Type",
    )


async def read_json(request: HTTPRequest, limit: int, timeout: float) -> Any:
    """The body of a JSON request: content type checked (415), size bounded (413), read
    within ``timeout`` seconds (408), decoded and checked (400)."""
    check_content_type(request.headers.get("content-type"))
    try:
        async with asyncio.timeout(timeout):
            raw = await read_body(request.receive, request.headers.get("content-length"), limit)
    except TimeoutError:
        raise HTTPProblem(
            408,
            f"the request body did not arrive within {timeout:g}s",
            code="request_timeout",
            headers={"Connection": "close"},
        ) from None
    return parse_json_body(raw)


async def read_body(
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    content_length: str | None,
    limit: int,
) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes.

    A ``Content-Length`` over the limit is refused before anything is read; without one
    (chunked) or with one under it, bytes are counted as ASGI delivers them and reading
    stops at the first message past the limit, so at most one message (the server's read
    size, 64 KiB for uvicorn) beyond it is ever held. A body under the limit that arrives
    in one message (the usual case) is returned as is, without a copy. A client that
    disconnects mid-body raises :class:`ClientLeft`.
    """
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            declared = -1  # the server validates framing; count what arrives instead
        if declared > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            body: bytes = message.get("body", b"")
            if body:
                size += len(body)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(body)
            if not message.get("more_body", False):
                break
        elif kind == "http.disconnect":
            raise ClientLeft()
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


def _too_large(limit: int) -> HTTPProblem:
    # `Connection: close`: the rest of the body is never read, so the connection cannot
    # carry another request (uvicorn closes it after this answer).
    return HTTPProblem(
        413,
        f"the request body is larger than this server's limit of {limit} bytes",
        code="request_too_large",
        headers={"Connection": "close"},
    )


def parse_json_body(raw: bytes) -> Any:
    """The decoded body, or a 400 :class:`HTTPProblem` naming the offending value."""
    try:
        return _within_depth(loads_strict(raw))
    except _Refused:
        pass
    try:
        value = json.loads(raw)
    except RecursionError:
        raise _too_deep("") from None
    except ValueError as exc:
        raise HTTPProblem(
            400, f"the request body is not valid JSON: {clip(str(exc), 80)}"
        ) from None
    _walk_all(value)
    return value


class _Refused(Exception):
    """orjson refused the body; parse it again to say why."""


def loads_strict(raw: bytes) -> Any:
    """orjson alone (no ``json`` fallback): refuses every value the gateway cannot send on."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson ships with the gateway extra
        raise _Refused() from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Refused() from None


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{clip(key, 60)}" if parent else clip(key, 60)


def _too_deep(where: str) -> HTTPProblem:
    return HTTPProblem(
        400,
        f"the request body is nested deeper than {MAX_DEPTH} levels",
        param=where or None,
    )


def _within_depth(value: Any) -> Any:
    """``value`` when no container in it is nested deeper than :data:`MAX_DEPTH`.

    Depths only: the path to name in the error is found again, by :func:`_walk_all`,
    when there is one (building a path string for every container of every good body
    was most of this check's cost)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > MAX_DEPTH:
            _walk_all(value)  # raises, naming where
            raise _too_deep("")  # pragma: no cover - _walk_all found it first
        kind = type(node)
        if kind is dict:
            for v in node.values():
                if type(v) is dict or type(v) is list:
                    push((v, depth + 1))
        elif kind is list:
            for v in node:
                if type(v) is dict or type(v) is list:
                    push((v, depth + 1))
    return value


def _bad_string(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _walk_all(value: Any) -> None:
    """Depth, strings (keys too), numbers: everything ``json`` accepts and orjson does not."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, str):
            if _bad_string(node):
                raise HTTPProblem(
                    400,
                    "a string in the request body holds a lone UTF-16 surrogate, which is "
                    "not valid Unicode",
                    param=where or None,
                )
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise HTTPProblem(
                    400,
                    f"{node} is not a JSON number (NaN and Infinity are not valid JSON)",
                    param=where or None,
                )
        elif isinstance(node, int) and not isinstance(node, bool):
            if not _INT_RANGE[0] <= node <= _INT_RANGE[1]:
                raise HTTPProblem(400, "an integer is out of the 64-bit range", param=where or None)
        elif isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise _too_deep(where)
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for k, v in items:
                if isinstance(k, str) and _bad_string(k):
                    raise HTTPProblem(
                        400,
                        "a key in the request body holds a lone UTF-16 surrogate",
                        param=where or None,
                    )
                stack.append((v, _path(where, k), depth + 1))
