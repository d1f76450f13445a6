"""The middleware protocol and the stack that runs it.

One protocol, after tower's ``Service::call`` and Starlette's ``Middleware``::

    async def __call__(self, request: Request, call_next: CallNext) -> Response

A cache hit returns without calling ``call_next``; a cascade calls another backend; a retry
calls it again. There are no before/after hook pairs: code before ``await call_next(...)``
is "before", code after is "after". A streamed response comes back before its text
exists; use :meth:`Response.complete` (buffering) or ``response.stream.on_complete``
(non-blocking) to act on the final text.

Middleware run in the caller's task. Never spawn a task unless the middleware is about
concurrency (speculation, hedging), because OpenTelemetry's context is a context variable:
a spawned task that does not copy it detaches its spans from the tree.

:class:`Use` is a lazy, serialisable record of "this middleware with these options",
resolved through the registry when the pipeline is built. The stack is built once and is
immutable afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from opentelemetry import trace
from opentelemetry.trace import Tracer

from flowopt._span_scope import activated
from flowopt.errors import ConfigError
from flowopt.tracing import (
    PipelineTracing,
    client_kind,
    get_tracer,
    record_decisions,
    record_error,
    record_request,
    record_response,
)
from flowopt.types import Decision, Request, Response

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flowopt.backends.base import Backend

__all__ = [
    "CallNext",
    "Middleware",
    "MiddlewareBase",
    "PipelineContext",
    "Use",
    "build_stack",
    "traced_backend",
]

CallNext = Callable[[Request], Awaitable[Response]]
"""The rest of the stack below a middleware, and the shape of a whole stack."""


@runtime_checkable
class Middleware(Protocol):
    """Anything with this call signature is a middleware."""

    async def __call__(self, request: Request, call_next: CallNext) -> Response: ...


@dataclass(frozen=True)
class PipelineContext:
    """What a middleware may need from the pipeline it is part of, given once at start-up
    through the optional ``async def setup(self, ctx)``. ``backends`` maps tier/backend
    names to backends; ``backend`` is the default one. ``steered`` is true when the stack
    ends in the steering terminal (:mod:`flowopt.middleware.steer`), which dispatches on
    ``Request.route`` and enforces ``Request.avoid``: a pipeline's stack always does; a
    stack built by hand over one backend may not, and layers then enforce avoidance
    themselves. ``tracing`` is the pipeline's tracing: pass it to
    :func:`traced_backend`/:func:`build_stack` when a middleware composes layers itself,
    so its spans join the pipeline's tree."""

    name: str
    backend: Backend
    backends: Mapping[str, Backend] = field(default_factory=dict)
    steered: bool = False
    tracing: PipelineTracing | None = None


class MiddlewareBase:
    """Optional convenience base: a ``name``, a :meth:`decision` helper, and no-op
    lifecycle hooks. Subclasses implement ``__call__``.

    ``positional`` names the option that a YAML short form ``{name: value}`` sets.
    ``options_model`` is the frozen, typed value of the options (a pydantic model, see
    :mod:`flowopt.middleware.options`): specs are checked against it before anything is
    built, and ``flowopt schema`` shows it. None: options are checked only by ``__init__``.
    """

    name: ClassVar[str] = "middleware"
    positional: ClassVar[str | None] = None
    options_model: ClassVar[type[BaseModel] | None] = None

    async def setup(self, ctx: PipelineContext) -> None:
        """Called once before the first request (connect stores, read model identity)."""

    async def aclose(self) -> None:
        """Called when the pipeline closes."""

    def decision(self, action: str, **detail: Any) -> Decision:
        return Decision(self.name, action, detail)

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        return await call_next(request)


_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, init=False)
class Use:
    """A lazy record: a middleware name (resolved through the registry) or a callable,
    with options. ``Use("cache", threshold=0.9)``. Equal records build equal stacks, and
    name-based records round-trip through YAML."""

    target: str | Any
    options: Mapping[str, Any]

    def __init__(self, target: str | Any, /, **options: Any) -> None:
        object.__setattr__(self, "target", target)
        object.__setattr__(
            self, "options", MappingProxyType(dict(options)) if options else _NO_OPTIONS
        )

    def __hash__(self) -> int:
        return hash((self.target if isinstance(self.target, str) else id(self.target),))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Use):
            return NotImplemented
        return self.target == other.target and dict(self.options) == dict(other.options)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        name = (
            self.target
            if isinstance(self.target, str)
            else getattr(self.target, "__name__", repr(self.target))
        )
        return f"Use({name!r}{', ' if opts else ''}{opts})"

    @property
    def name(self) -> str:
        if isinstance(self.target, str):
            return self.target
        return str(getattr(self.target, "name", None) or getattr(self.target, "__name__", "custom"))

    def to_spec(self) -> str | dict[str, Any]:
        """The YAML form: ``name`` or ``{name: {options}}``."""
        if not isinstance(self.target, str):
            raise ConfigError(
                f"middleware {self.name!r} was given as a Python object and has no YAML form",
                hint="register it under a name (entry point 'flowopt.middleware') and use "
                "Use('name', ...) so the pipeline can be written as YAML",
            )
        if not self.options:
            return self.target
        if set(self.options) == {"__positional__"}:
            return {self.target: self.options["__positional__"]}
        return {self.target: dict(self.options)}

    def instantiate(self, cls: Any, *, where: str) -> Any:
        """Call ``cls(**options)``, mapping the YAML short form ``{name: value}`` onto the
        class's ``positional`` option, and turning a bad option into a ConfigError that
        names ``where``."""
        options = dict(self.options)
        if "__positional__" in options:
            key = getattr(cls, "positional", None)
            if key is None:
                raise ConfigError(
                    f"{where}: {self.name!r} takes no short-form value "
                    f"(got {options['__positional__']!r})",
                    hint=f"write '{self.name}: {{option: value}}'",
                )
            options[key] = options.pop("__positional__")
        from flowopt.middleware._signature import option_type_error
        from flowopt.middleware.options import options_model_of

        if options_model_of(cls) is None:  # a model validates in the constructor
            wrong = option_type_error(cls, options)
            if wrong is not None:
                raise ConfigError(
                    f"{where}: {self.name}.{wrong[0]}: {wrong[1]}",
                    hint=f"see the docs of {self.name!r} for its options",
                )
        try:
            return cls(**options)
        except (TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{where}: {self.name!r} rejected its options {sorted(options)}: {exc}",
                hint=f"see the docs of {self.name!r} for its options",
            ) from None
        except ConfigError as exc:
            if not exc.message.startswith(f"{where}:"):
                exc.message = f"{where}: {exc.message}"
            raise

    @classmethod
    def parse(cls, value: Any, *, where: str = "middleware") -> Use:
        """Accept ``Use``, ``"name"``, ``{name: {k: v}}``, ``{name: value}``, ``{name: null}``
        or a middleware object/class."""
        if isinstance(value, Use):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            if len(value) != 1:
                raise ConfigError(
                    f"{where}: a middleware entry must have exactly one key, got {list(value)}",
                    hint="write '- cache' or '- cache: {threshold: 0.9}'",
                )
            ((name, opts),) = value.items()
            if opts is None:
                return cls(name)
            if isinstance(opts, Mapping):
                return cls(name, **dict(opts))
            return cls(name, __positional__=opts)
        if callable(value):
            return cls(value)
        raise ConfigError(
            f"{where}: cannot read a middleware from {value!r}",
            hint="use a registered name, {name: {options}}, Use(...) or a middleware object",
        )


def _end_span_when_done(
    span: trace.Span, response: Response, middleware: str | None, capture: bool = False
) -> Response:
    """End ``span`` now, or when the response's stream finishes."""
    stream = response.stream
    if stream is None or stream.done:
        if middleware is not None:
            record_decisions(span, response.decisions, middleware)
        else:
            record_response(span, response, capture_content=capture)
        span.end()
        return response

    def _ok(final: Response) -> None:
        if middleware is not None:
            record_decisions(span, final.decisions, middleware)
        else:
            record_response(span, final, capture_content=capture)
        span.end()

    def _err(exc: BaseException) -> None:
        record_error(span, exc)
        span.end()

    stream.on_complete(_ok)
    stream.on_error(_err)
    return response


def traced_backend(
    backend: Backend, *, name: str, tracing: PipelineTracing | None = None
) -> CallNext:
    """The terminal handler: call the backend inside a ``chat {model}`` CLIENT span, made
    by the pipeline's tracer and with content only if the pipeline captures it. Without
    ``tracing``: the global provider and the process default (:meth:`PipelineTracing.default`).
    """
    settings = tracing or PipelineTracing.default()
    tracer = settings.tracer
    capture = settings.capture_content
    kind = client_kind()
    provider = backend.provider
    endpoint_for_display = backend.endpoint_for_display

    async def call_backend(request: Request) -> Response:
        op = "chat" if request.kind == "chat" else "text_completion"
        model = request.model or getattr(backend, "model", None) or name
        span = tracer.start_span(f"{op} {model}", kind=kind)
        record_request(
            span,
            request,
            provider=provider,
            endpoint=endpoint_for_display(),
            model=model,
            capture_content=capture,
        )
        try:
            with activated(span):
                response = await backend.generate(request)
        except BaseException as exc:
            record_error(span, exc)
            span.end()
            raise
        return _end_span_when_done(span, response, None, capture)

    return call_backend


def _wrap(mw: Middleware, name: str, inner: CallNext, tracer: Tracer | None) -> CallNext:
    """``mw`` over ``inner``, inside a ``middleware {name}`` span unless ``tracer`` is None."""
    if tracer is None:

        async def plain(request: Request) -> Response:
            return await mw(request, inner)

        return plain

    span_name = f"middleware {name}"

    async def with_span(request: Request) -> Response:
        span = tracer.start_span(span_name)
        try:
            with activated(span):
                response = await mw(request, inner)
        except BaseException as exc:
            record_error(span, exc)
            span.end()
            raise
        return _end_span_when_done(span, response, name)

    return with_span


def build_stack(
    middlewares: list[tuple[str, Middleware]],
    terminal: CallNext,
    *,
    traced: bool | None = None,
    tracing: PipelineTracing | None = None,
) -> CallNext:
    """Compose ``middlewares`` (outermost first) around ``terminal`` once. Each gets a
    span from ``tracing``'s tracer (default: the global provider's) when ``traced``
    (default: ``tracing.middleware_spans``, else on)."""
    if traced is None:
        traced = tracing.middleware_spans if tracing is not None else True
    tracer: Tracer | None = None
    if traced:
        tracer = tracing.tracer if tracing is not None else get_tracer()
    handler = terminal
    for name, mw in reversed(middlewares):
        handler = _wrap(mw, name, handler, tracer)
    return handler


def elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
