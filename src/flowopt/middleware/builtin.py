"""The smallest built-in middleware: a no-op (for measuring the stack's own cost) and a
request logger. Both are registered by name through flowopt's own entry points."""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from pydantic import field_validator

from flowopt.middleware.base import CallNext, MiddlewareBase
from flowopt.middleware.options import MiddlewareOptions, make_options
from flowopt.stream import when_final
from flowopt.types import Request, Response

__all__ = ["Logging", "LoggingOptions", "NoOp", "NoOpOptions"]


class NoOpOptions(MiddlewareOptions):
    """``noop`` takes no options."""


class LoggingOptions(MiddlewareOptions):
    """Options of ``logging``."""

    level: str = "INFO"
    """Log level name of the per-request line: DEBUG, INFO, WARNING or ERROR."""
    logger: str = "flowopt.requests"
    """Name of the Python logger written to."""

    @field_validator("level")
    @classmethod
    def _level(cls, v: str) -> str:
        if not isinstance(logging.getLevelName(v.upper()), int):
            raise ValueError(f"logging level {v!r} is not a level name")
        return v


class NoOp(MiddlewareBase):
    """Passes the request through untouched. Used by ``benchmarks/overhead.py`` to price
    one hop of the stack, and as a template for plugin authors."""

    name: ClassVar[str] = "noop"
    options_model: ClassVar[type[NoOpOptions]] = NoOpOptions

    def __init__(self, options: NoOpOptions | None = None, /, **kwargs: Any) -> None:
        self.options = make_options(NoOpOptions, options, kwargs, name=self.name)

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        return await call_next(request)


class Logging(MiddlewareBase):
    """Logs one line per request (id, step, model, tokens, latency) at ``level``.
    Content is never logged: prompts can hold personal data."""

    name: ClassVar[str] = "logging"
    positional: ClassVar[str | None] = "level"
    options_model: ClassVar[type[LoggingOptions]] = LoggingOptions

    def __init__(self, options: LoggingOptions | str | None = None, /, **kwargs: Any) -> None:
        self.options = opts = make_options(
            LoggingOptions, options, kwargs, name=self.name, positional=self.positional
        )
        self._level: int = logging.getLevelName(opts.level.upper())
        self._log = logging.getLogger(opts.logger)

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        start = time.perf_counter()
        response = await call_next(request)

        def emit(final: Response) -> None:
            self._log.log(
                self._level,
                "request=%s step=%s model=%s in=%d out=%d latency_ms=%.1f finish=%s",
                request.request_id,
                request.step,
                final.model,
                final.usage.input_tokens,
                final.usage.output_tokens,
                (time.perf_counter() - start) * 1000.0,
                final.finish_reason,
            )

        response = await when_final(response, emit)
        return response.with_decision(
            self.decision("logged", level=logging.getLevelName(self._level))
        )
