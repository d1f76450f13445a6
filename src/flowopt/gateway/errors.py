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
"""

from __future__ import annotations

import math

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

__all__ = ["HTTPProblem", "error_kind", "problem_from"]


class HTTPProblem(Exception):
    """An error answer: status, OpenAI error fields and extra headers (``Retry-After``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _retry_after(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def error_kind(exc: BaseException) -> str:
    """A short, bounded label for metrics (``flowopt.backend.timeout`` -> ``backend.timeout``)."""
    if isinstance(exc, HTTPProblem):
        return exc.code or exc.type
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
        if exc.status == 429:
            return HTTPProblem(
                429,
                "the model server is rate limiting",
                type="rate_limit_error",
                code="backend_rate_limited",
                headers=_retry_after(exc.retry_after),
            )
        if 400 <= exc.status < 500 and exc.status not in (401, 403, 404):
            # The server rejected what the caller sent (context too long, bad parameter):
            # pass its explanation on, the caller can fix it.
            return HTTPProblem(exc.status, _backend_message(exc.body), code="backend_rejected")
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


def _backend_message(body: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else its first 300 chars."""
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return body[:300] or "the model server rejected the request"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:1000]
        if isinstance(data.get("message"), str):
            return str(data["message"])[:1000]
    return body[:300]
