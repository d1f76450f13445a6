"""The smallest built-in middleware: a no-op (for measuring the stack's own cost) and a
request logger. Both are registered by name through flowopt's own entry points."""

from __future__ import annotations

import logging
import time
from typing import ClassVar

from flowopt.middleware.base import CallNext, MiddlewareBase
from flowopt.stream import when_final
from flowopt.types import Request, Response

__all__ = ["Logging", "NoOp"]


class NoOp(MiddlewareBase):
    """Passes the request through untouched. Used by ``benchmarks/overhead.py`` to price
    one hop of the stack, and as a template for plugin authors."""

    name: ClassVar[str] = "noop"

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        return await call_next(request)


class Logging(MiddlewareBase):
    """Logs one line per request (id, step, model, tokens, latency) at ``level``.
    Content is never logged: prompts can hold personal data."""

    name: ClassVar[str] = "logging"
    positional: ClassVar[str | None] = "level"

    def __init__(self, level: str = "INFO", logger: str = "flowopt.requests") -> None:
        self._level = logging.getLevelName(level.upper())
        if not isinstance(self._level, int):
            from flowopt.errors import ConfigError

            raise ConfigError(
                f"logging level {level!r} is not a level name",
                hint="use DEBUG, INFO, WARNING or ERROR",
            )
        self._log = logging.getLogger(logger)

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
