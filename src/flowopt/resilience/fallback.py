"""Fallback: when a backend cannot answer, try the next tier, then a stale answer.

Order of resort: the retry layer below already moved to another *replica*; this layer moves
to another *backend* (a different model or tier, by name), and when every tier failed it
serves a stale answer if a stale source has one — marked ``stale`` in the response's
metadata and decisions, never passed off as fresh. Every step is recorded on the span.

What falls back: retryable backend errors (after retries), endpoints cooling down, and
``Overloaded`` from load shedding (another tier may have room). Never: invalid requests,
configuration errors, tenant rate limits (the tenant is over budget everywhere), or a
stream that already delivered text.

Stale sources: any object with ``async def stale_lookup(request) -> Response | None``. The
built-in :class:`LastGoodAnswers` keeps the last good deterministic answer per (tenant,
template, request content).

A pinned request (``Request.pinned``: a step declared on one backend) never moves to
another tier; it may still get a stale answer *from its own backend's* past answers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Annotated, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BeforeValidator, Field

from flowopt.errors import BackendError, ConfigError, EndpointCoolingDown, Overloaded
from flowopt.middleware.base import CallNext, MiddlewareBase, PipelineContext
from flowopt.middleware.options import MiddlewareOptions, make_options
from flowopt.stream import replay, when_final
from flowopt.types import Request, Response

__all__ = [
    "Fallback",
    "FallbackOptions",
    "LastGoodAnswers",
    "StaleAnswersOptions",
    "StaleSource",
]


@runtime_checkable
class StaleSource(Protocol):
    """Something that may hold an old answer to this request."""

    async def stale_lookup(self, request: Request) -> Response | None: ...


class LastGoodAnswers:
    """An in-process LRU of the last good answer per request, for stale fallback only.

    Stores only answers that are safe to repeat: not sampled (temperature <= 0.1), finished
    normally (``stop``, or ``length`` under the caller's own ``max_tokens``), not stale.
    Keyed by tenant + template + content hash, so one tenant never gets another's answer.
    """

    def __init__(self, max_entries: int = 1024, max_age_s: float = 3600.0) -> None:
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self._items: OrderedDict[str, tuple[float, Response]] = OrderedDict()

    @staticmethod
    def _key(request: Request) -> str:
        return f"{request.tenant}|{request.template}|{request.content_hash()}"

    def remember(self, request: Request, response: Response) -> None:
        t = request.params.temperature
        if t is None or t > 0.1:
            return
        # "length" is kept only when the caller capped max_tokens: that truncation *is* the
        # deterministic answer to this request; any other ending is not safe to repeat.
        ok = response.finish_reason == "stop" or (
            response.finish_reason == "length" and request.params.max_tokens is not None
        )
        if not ok:
            return
        if response.metadata.get("stale") or response.stream is not None:
            return
        key = self._key(request)
        self._items[key] = (time.monotonic(), response)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    async def stale_lookup(self, request: Request) -> Response | None:
        hit = self._items.get(self._key(request))
        if hit is None:
            return None
        stored_at, response = hit
        age = time.monotonic() - stored_at
        if age > self.max_age_s:
            return None
        return response.replace(
            cached=True,
            metadata={**response.metadata, "stale": True, "stale_age_s": round(age, 3)},
            cost=0.0,
        )


class StaleAnswersOptions(MiddlewareOptions):
    """The built-in stale source (:class:`LastGoodAnswers`)."""

    max_entries: int = Field(1024, ge=1)
    """Answers kept (least recently stored are dropped first)."""
    max_age_s: float = Field(3600.0, gt=0)
    """Seconds: an older answer is not served, even as stale."""


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class FallbackOptions(MiddlewareOptions):
    """Options of ``fallback`` (short form: ``fallback: [strong]`` sets ``tiers``)."""

    tiers: Annotated[
        tuple[str, ...], BeforeValidator(_one_or_many, json_schema_input_type=list[str] | str)
    ] = ()
    """Backend names to try, in order, after the request's own backend (e.g. ``[strong,
    default]``). Empty: no tier fallback, only stale answers."""
    stale: bool = True
    """Serve a stale answer when every tier failed, if a source has one."""
    stale_answers: StaleAnswersOptions | bool = True
    """The built-in source of stale answers (``{max_entries: 1024, max_age_s: 3600}``;
    ``true``: those defaults); ``false`` to rely only on a cache's source."""


def _falls_back(exc: BaseException) -> bool:
    """Another tier may answer: the service shed this request, or the backend failed in a
    way a retry could fix (after the retries below gave up), or every endpoint is cooling
    down. Not: a caller over its rate limit, a spent deadline, a rejected request."""
    if isinstance(exc, Overloaded | EndpointCoolingDown):
        return True
    return isinstance(exc, BackendError) and exc.retryable


class Fallback(MiddlewareBase):
    """Options: :class:`FallbackOptions` (``tiers``, ``stale``, ``stale_answers``)."""

    name: ClassVar[str] = "fallback"
    positional: ClassVar[str | None] = "tiers"
    options_model: ClassVar[type[FallbackOptions]] = FallbackOptions

    def __init__(self, options: FallbackOptions | Any = None, /, **kwargs: Any) -> None:
        self.options = opts = make_options(
            FallbackOptions, options, kwargs, name=self.name, positional=self.positional
        )
        self.tiers = list(opts.tiers)
        self.stale = opts.stale
        self.last_good: LastGoodAnswers | None = None
        if opts.stale and opts.stale_answers is not False:
            source = opts.stale_answers
            if not isinstance(source, StaleAnswersOptions):
                source = StaleAnswersOptions()
            self.last_good = LastGoodAnswers(source.max_entries, source.max_age_s)
        self._sources: list[StaleSource] = [self.last_good] if self.last_good else []

    async def setup(self, ctx: PipelineContext) -> None:
        unknown = [t for t in self.tiers if t not in ctx.backends]
        if unknown:
            raise ConfigError(
                f"fallback tiers {unknown} are not backends of pipeline {ctx.name!r} "
                f"(it has {sorted(ctx.backends)})",
                hint="declare them under `backends:` or fix the names",
            )

    def _chain(self, request: Request) -> list[str | None]:
        first = request.route
        if request.pinned:
            return [first]
        rest: list[str | None] = [t for t in self.tiers if t != first]
        return [first, *rest]

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        path: list[dict[str, Any]] = []
        last: BaseException | None = None
        for i, tier in enumerate(self._chain(request)):
            attempt = request if i == 0 or tier is None else request.routed(tier)
            try:
                response = await call_next(attempt)
            except (BackendError, Overloaded) as exc:
                if not _falls_back(exc):
                    raise
                path.append({"backend": tier or "(own)", "error": exc.code})
                last = exc
                continue
            return await self._served(request, response, tier, path)
        assert last is not None
        if self.stale:
            for source in self._sources:
                old = await source.stale_lookup(request)
                if old is not None:
                    if request.stream:
                        old = replay(old)
                    return old.with_decision(
                        self.decision(
                            "stale",
                            path=path,
                            stale_age_s=old.metadata.get("stale_age_s"),
                            reason=str(getattr(last, "code", type(last).__name__)),
                        )
                    )
        last.add_note(f"flowopt.fallback: every tier failed: {path}")
        raise last

    async def _served(
        self, request: Request, response: Response, tier: str | None, path: list[dict[str, Any]]
    ) -> Response:
        if self.last_good is not None:
            lg = self.last_good
            response = await when_final(response, lambda final: lg.remember(request, final))
        if path:
            response = response.with_decision(
                self.decision("fell_back", path=path, served_by=tier or "(own)")
            )
        return response
