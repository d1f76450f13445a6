"""The one error hierarchy of flowopt.

Every error flowopt raises is a :class:`FlowoptError`, so application code can catch one
type. Errors are split by *when* they happen, because the fix differs:

::

    FlowoptError                      code: str, hint: str
    ├── ConfigError                   at build time: the spec or arguments are wrong
    │   ├── SpecError                 a YAML/JSON spec is invalid (file, field, fix)
    │   ├── UnknownNameError          a registry name is unknown (with suggestions)
    │   ├── PluginConflictError       two distributions claim one registry name
    │   └── MissingDependencyError    an optional extra is not installed (install hint)
    └── RunError                      at run time: a request could not be answered
        ├── InvalidRequestError       the request itself is malformed (bad messages...)
        ├── BackendError              the backend failed; carries the endpoint
        │   ├── BackendUnavailable    connection refused / reset / DNS: retryable
        │   │   └── EndpointCoolingDown   every endpoint of the chosen backend is avoided
        │   │                             (cooling down, circuit open): nothing was sent
        │   ├── BackendTimeout        no answer within the deadline: retryable
        │   ├── BackendHTTPError      non-2xx status (retryable for 429 and 5xx)
        │   ├── BackendProtocolError  2xx but the body is not what the API promises
        │   └── IncompleteStream      a stream ended before its final chunk
        │                             (``client_left``: its reader closed it, not the server)
        ├── StoreError                a cache / memory / limit store failed
        ├── RejectedError             refused on purpose; ``retry_after`` says when to retry
        │   ├── RateLimited           the caller is over its allowance (HTTP 429)
        │   ├── Overloaded            the service sheds load: queue full, evicted (HTTP 503)
        │   └── DeadlineExceeded      the request's own deadline cannot be met (HTTP 504)
        └── StepError                 a function step raised (wraps the cause)

Code that reacts to a failure (the gateway's status codes, the breaker, the fallback)
matches on these *types*, never on message text or reason strings: ``reason`` and
``message`` are for people.

Each error has a stable ``code`` (``flowopt.<kind>``) that ends its message, so logs and
issue reports can be searched, and a ``hint`` that says how to fix it. Run-time errors carry
the request id they belong to when known.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "BackendError",
    "BackendHTTPError",
    "BackendProtocolError",
    "BackendTimeout",
    "BackendUnavailable",
    "ConfigError",
    "DeadlineExceeded",
    "EndpointCoolingDown",
    "FlowoptError",
    "IncompleteStream",
    "InvalidRequestError",
    "MissingDependencyError",
    "Overloaded",
    "PluginConflictError",
    "RateLimited",
    "RejectedError",
    "RunError",
    "SpecError",
    "StepError",
    "StoreError",
    "UnknownNameError",
]


class FlowoptError(Exception):
    """Base of every flowopt error. ``str(err)`` ends with the hint and the error code."""

    code = "flowopt.error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return f"{text}  [{self.code}]"


class ConfigError(FlowoptError):
    """The pipeline was declared wrongly; raised while building, never mid-request."""

    code = "flowopt.config"


class SpecError(ConfigError):
    """A spec file failed validation. Names the file, the field path and the fix."""

    code = "flowopt.spec"

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.source = source
        self.field = field
        where = ""
        if source:
            where += f"{source}: "
        if field:
            where += f"field '{field}': "
        super().__init__(where + message, hint=hint)


class UnknownNameError(ConfigError):
    """A name did not resolve in a registry; ``suggestions`` holds close matches."""

    code = "flowopt.unknown_name"

    def __init__(self, kind: str, name: str, known: list[str], suggestions: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = known
        self.suggestions = suggestions
        hint = (
            f"did you mean {', '.join(repr(s) for s in suggestions)}?"
            if suggestions
            else f"known {kind} names: {', '.join(known) or '(none)'}"
        )
        hint += " Run `flowopt plugins list` to see every registered name."
        super().__init__(f"unknown {kind} {name!r}", hint=hint)


class PluginConflictError(ConfigError):
    """Two installed distributions register the same name in one entry-point group."""

    code = "flowopt.plugin_conflict"


class MissingDependencyError(ConfigError):
    """An optional dependency is missing; the hint says which extra to install."""

    code = "flowopt.missing_dependency"

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{purpose} needs the optional module {module!r}, which is not installed",
            hint=f"pip install 'flowopt[{extra}]'",
        )


class RunError(FlowoptError):
    """A request could not be answered. ``request_id`` links it to its trace."""

    code = "flowopt.run"

    def __init__(
        self, message: str, *, hint: str | None = None, request_id: str | None = None
    ) -> None:
        self.request_id = request_id
        super().__init__(message, hint=hint)


class InvalidRequestError(RunError):
    """The request is malformed (empty messages, unknown role, bad parameter...).

    ``param`` names the offending field when known (``messages[2].tool_call_id``): the
    gateway puts it in the OpenAI error body so a client can point at it.
    """

    code = "flowopt.invalid_request"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        request_id: str | None = None,
        param: str | None = None,
    ) -> None:
        self.param = param
        super().__init__(message, hint=hint, request_id=request_id)


class BackendError(RunError):
    """The backend failed. ``endpoint`` is the URL that failed; ``retryable`` says if a
    retry could help (resilience middleware reads it)."""

    code = "flowopt.backend"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        hint: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.retry_after = retry_after
        super().__init__(f"{message} (endpoint {endpoint})", hint=hint, request_id=request_id)


class BackendUnavailable(BackendError):
    """Could not connect, or the connection dropped before an answer."""

    code = "flowopt.backend.unavailable"
    retryable = True


class EndpointCoolingDown(BackendUnavailable):
    """Every endpoint of the chosen backend is cooling down (after a 429 or 503 with
    ``Retry-After``) or has its circuit open. Nothing was sent. ``retry_after`` is when the
    first of them may take traffic again."""

    code = "flowopt.backend.cooling_down"


class BackendTimeout(BackendError):
    """The backend did not answer in time."""

    code = "flowopt.backend.timeout"
    retryable = True


class BackendHTTPError(BackendError):
    """The backend answered with a non-2xx status.

    ``body`` is the server's error body as text; :attr:`engine_error` is its OpenAI-shaped
    ``error`` object when it has one, so the gateway can hand the caller exactly what the
    engine said (message, ``type``, ``param``, ``code``) instead of a paraphrase.
    """

    code = "flowopt.backend.http"

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        status: int,
        body: str = "",
        hint: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.body = body
        super().__init__(
            message, endpoint=endpoint, hint=hint, request_id=request_id, retry_after=retry_after
        )

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.status == 429 or self.status >= 500

    @property
    def engine_error(self) -> dict[str, Any] | None:
        """The body's OpenAI error object (``{"message", "type", "param", "code", ...}``,
        every field the engine sent), or None when the body is not one.

        Accepts ``{"error": {...}}`` (OpenAI, vLLM) and a bare ``{"message": ...}`` object
        (some OpenAI-compatible servers); the object needs a string ``message``.
        """
        try:
            data = json.loads(self.body) if self.body else None
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        err = data.get("error", data)
        if not isinstance(err, dict) or not isinstance(err.get("message"), str):
            return None
        return err


class BackendProtocolError(BackendError):
    """A 2xx answer whose body is not valid for the OpenAI-compatible API."""

    code = "flowopt.backend.protocol"


class IncompleteStream(BackendError):
    """A stream stopped before the server said it was finished. Never a finished answer.

    ``client_left`` is true when the stream's *reader* closed it (the client hung up, a
    consumer stopped iterating): the endpoint did nothing wrong, so a circuit breaker does
    not count it and nothing retries it.
    """

    code = "flowopt.backend.incomplete_stream"

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        partial_text: str = "",
        client_left: bool = False,
        **kw: object,
    ) -> None:
        self.partial_text = partial_text
        self.client_left = client_left
        super().__init__(message, endpoint=endpoint, **kw)  # type: ignore[arg-type]

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return not self.client_left


class StoreError(RunError):
    """A store (cache, memory, rate-limit counters) failed. Middleware that can do without
    the store records this on the span and carries on; it never reaches the user then."""

    code = "flowopt.store"


class RejectedError(RunError):
    """Refused on purpose: load shed, tenant over its limit, or deadline already spent.
    ``retry_after`` (seconds) tells the caller when trying again may succeed; ``reason`` is
    a short label for people and metrics (``shed:evicted``, ``rate_limit``). Raise one of
    the subclasses: callers match on the type."""

    code = "flowopt.rejected"
    default_reason = "rejected"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.reason = reason or self.default_reason
        self.retry_after = retry_after
        super().__init__(message, hint=hint, request_id=request_id)


class RateLimited(RejectedError):
    """The caller (tenant, key) is over its allowance. Its own traffic is the cause: HTTP
    429, and a fallback to another tier would not help."""

    code = "flowopt.rejected.rate_limited"
    default_reason = "rate_limit"


class Overloaded(RejectedError):
    """The service is shedding load (queue full, evicted by more important work). Not the
    caller's fault: HTTP 503 with ``Retry-After``; another tier may have room."""

    code = "flowopt.rejected.overloaded"
    default_reason = "shed"


class DeadlineExceeded(RejectedError):
    """The request's own deadline is spent, or cannot be met by the time it would start:
    HTTP 504. Nothing was sent to a backend."""

    code = "flowopt.rejected.deadline"
    default_reason = "deadline"


class StepError(RunError):
    """A function step raised. The original exception is ``__cause__``."""

    code = "flowopt.step"

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        super().__init__(
            f"step {step!r} raised {type(cause).__name__}: {cause}",
            hint="fix the step function; the traceback is attached as __cause__",
        )
