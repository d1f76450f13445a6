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
        │   ├── BackendTimeout        no answer within the deadline: retryable
        │   ├── BackendHTTPError      non-2xx status (retryable for 429 and 5xx)
        │   ├── BackendProtocolError  2xx but the body is not what the API promises
        │   └── IncompleteStream      a stream ended before its final chunk
        ├── StoreError                a cache / memory / limit store failed
        ├── RejectedError             refused on purpose (load shed, rate limit, deadline)
        └── StepError                 a function step raised (wraps the cause)

Each error has a stable ``code`` (``flowopt.<kind>``) that ends its message, so logs and
issue reports can be searched, and a ``hint`` that says how to fix it. Run-time errors carry
the request id they belong to when known.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendHTTPError",
    "BackendProtocolError",
    "BackendTimeout",
    "BackendUnavailable",
    "ConfigError",
    "FlowoptError",
    "IncompleteStream",
    "InvalidRequestError",
    "MissingDependencyError",
    "PluginConflictError",
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
    """The request is malformed (empty messages, unknown role, bad parameter...)."""

    code = "flowopt.invalid_request"


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


class BackendTimeout(BackendError):
    """The backend did not answer in time."""

    code = "flowopt.backend.timeout"
    retryable = True


class BackendHTTPError(BackendError):
    """The backend answered with a non-2xx status."""

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


class BackendProtocolError(BackendError):
    """A 2xx answer whose body is not valid for the OpenAI-compatible API."""

    code = "flowopt.backend.protocol"


class IncompleteStream(BackendError):
    """A stream stopped before the server said it was finished. Never a finished answer."""

    code = "flowopt.backend.incomplete_stream"
    retryable = True

    def __init__(
        self, message: str, *, endpoint: str, partial_text: str = "", **kw: object
    ) -> None:
        self.partial_text = partial_text
        super().__init__(message, endpoint=endpoint, **kw)  # type: ignore[arg-type]


class StoreError(RunError):
    """A store (cache, memory, rate-limit counters) failed. Middleware that can do without
    the store records this on the span and carries on; it never reaches the user then."""

    code = "flowopt.store"


class RejectedError(RunError):
    """Refused on purpose: load shed, tenant over its limit, or deadline already spent.
    ``retry_after`` (seconds) tells the caller when trying again may succeed."""

    code = "flowopt.rejected"

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        retry_after: float | None = None,
        hint: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(message, hint=hint, request_id=request_id)


class StepError(RunError):
    """A function step raised. The original exception is ``__cause__``."""

    code = "flowopt.step"

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        super().__init__(
            f"step {step!r} raised {type(cause).__name__}: {cause}",
            hint="fix the step function; the traceback is attached as __cause__",
        )
