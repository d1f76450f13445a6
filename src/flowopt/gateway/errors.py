"""Map flowopt's typed errors onto OpenAI's error JSON and HTTP status codes.

Why one table: an OpenAI client decides whether to retry from the status code alone
(the official client retries 408, 409, 429 and 5xx, and honours ``Retry-After``), so the
status must say what the error means for the caller — "your request is wrong" (4xx, do not
retry), "we refused on purpose, come back later" (429/503 with ``Retry-After``), "the model
server failed" (502/504). The body follows OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` so client libraries raise their usual
exception classes (``openai.BadRequestError``, ``openai.RateLimitError``...).

Internal details (tracebacks, backend URLs) never reach the caller: a backend failure is
described by kind, the full error goes to the server log with the request id.

Two sources, told apart: an error the **engine** returned for the caller's request (a 4xx:
a bad parameter, a prompt over the context) reaches the caller as the engine wrote it —
status, ``message``, ``type``, ``param``, ``code`` and any other field — so a client sees
what it would have seen talking to the engine directly. Every error **flowopt** makes has
one of flowopt's own string codes (the table in ``docs/gateway.md``) and an OpenAI
``type``; the ``x-flowopt-error-source`` header (``engine`` or ``flowopt``) says which one
answered, without touching the body.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from flowopt.errors import (
    BackendError,
    BackendHTTPError,
    BackendTimeout,
    DeadlineExceeded,
    FlowoptError,
    IncompleteStream,
    InvalidRequestError,
    RateLimited,
    RejectedError,
)

__all__ = ["SOURCE_HEADER", "HTTPProblem", "error_kind", "problem_from"]

SOURCE_HEADER = "x-flowopt-error-source"


class HTTPProblem(Exception):
    """An error answer: status, OpenAI error fields and extra headers (``Retry-After``).

    ``source`` is ``"flowopt"`` for flowopt's own errors (``code`` defaults to
    ``invalid_request`` for a 4xx: every flowopt error has a string code) or ``"engine"``
    for one the engine returned; ``engine`` then holds the engine's whole error object,
    written back as it came (fields flowopt does not know included).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | int | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        source: Literal["flowopt", "engine"] = "flowopt",
        engine: Mapping[str, Any] | None = None,
    ) -> None:
        if source == "flowopt":
            # a message may quote the client's values: never echo a megabyte back
            message = _clip(message, _MAX_MESSAGE)
            param = None if param is None else _clip(param, _MAX_PARAM)
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        if code is None and source == "flowopt" and type == "invalid_request_error":
            code = "invalid_request"
        self.code = code
        self.param = param
        self.source = source
        self.engine = engine
        self.headers = {**(headers or {}), SOURCE_HEADER: source}

    def body(self) -> dict[str, object]:
        own = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        if self.engine is not None:
            return {"error": {**own, **self.engine}}
        return {"error": own}


_MAX_MESSAGE = 1000  # characters of a flowopt error message
_MAX_PARAM = 200


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _retry_after(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def error_kind(exc: BaseException) -> str:
    """A short, bounded label for metrics (``flowopt.backend.timeout`` -> ``backend.timeout``)."""
    if isinstance(exc, HTTPProblem):
        return exc.code if isinstance(exc.code, str) else exc.type
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code.startswith("flowopt."):
        return code.removeprefix("flowopt.")
    return "internal"


def problem_from(exc: BaseException) -> HTTPProblem:
    """The HTTP answer for an exception raised while serving a request."""
    if isinstance(exc, HTTPProblem):
        return exc
    if isinstance(exc, InvalidRequestError):
        hint = f" ({exc.hint})" if exc.hint else ""
        return HTTPProblem(400, exc.message + hint, code="invalid_request", param=exc.param)
    if isinstance(exc, DeadlineExceeded):  # the caller's own deadline ran out first
        return HTTPProblem(
            504, f"request rejected: {exc.message}", type="api_error", code=exc.reason
        )
    if isinstance(exc, RateLimited):  # this caller is over its allowance
        return HTTPProblem(
            429,
            f"request rejected: {exc.message}",
            type="rate_limit_error",
            code=exc.reason,
            headers=_retry_after(exc.retry_after),
        )
    if isinstance(exc, RejectedError):  # Overloaded, or any other refusal: the service's state
        return HTTPProblem(
            503,
            f"request rejected: {exc.message}",
            type="service_unavailable",
            code=exc.reason,
            headers=_retry_after(exc.retry_after),
        )
    if isinstance(exc, BackendHTTPError):
        if 400 <= exc.status < 500 and exc.status not in (401, 403, 404):
            # The engine rejected what the caller sent (context too long, bad parameter) or
            # is rate limiting it: the caller gets the engine's own answer. 401/403/404 are
            # about flowopt's credentials or configuration, not the caller: a 502 below.
            return _engine_problem(exc)
        return HTTPProblem(
            502,
            f"the model server answered HTTP {exc.status}",
            type="api_error",
            code="backend_http_error",
            headers=_retry_after(exc.retry_after),
        )
    if isinstance(exc, BackendTimeout):
        return HTTPProblem(
            504, "the model server did not answer in time", type="api_error", code="backend_timeout"
        )
    if isinstance(exc, IncompleteStream):
        return HTTPProblem(
            502, "the model server's answer broke off", type="api_error", code="backend_incomplete"
        )
    if isinstance(exc, BackendError):
        return HTTPProblem(
            502,
            "the model server is unavailable",
            type="api_error",
            code="backend_unavailable",
            headers=_retry_after(exc.retry_after),
        )
    if isinstance(exc, FlowoptError):
        return HTTPProblem(500, f"the pipeline failed: {exc.code}", type="api_error", code=exc.code)
    return HTTPProblem(500, "internal error", type="api_error", code="internal_error")


def _engine_problem(exc: BackendHTTPError) -> HTTPProblem:
    """The engine's 4xx as the engine wrote it; a body that is not an OpenAI error object
    becomes flowopt's ``backend_rejected`` (429: ``backend_rate_limited``) with the body's
    first 300 characters as the message."""
    headers = _retry_after(exc.retry_after)
    err = exc.engine_error
    if err is None:
        if exc.status == 429:
            return HTTPProblem(
                429,
                "the model server is rate limiting",
                type="rate_limit_error",
                code="backend_rate_limited",
                headers=headers,
            )
        text = exc.body[:300] or "the model server rejected the request"
        return HTTPProblem(exc.status, text, code="backend_rejected", headers=headers)
    param = err.get("param")
    code = err.get("code")
    return HTTPProblem(
        exc.status,
        str(err["message"]),
        type=str(err.get("type") or "invalid_request_error"),
        code=code if isinstance(code, str | int) and not isinstance(code, bool) else None,
        param=param if isinstance(param, str) else None,
        headers=headers,
        source="engine",
        engine=err,
    )
