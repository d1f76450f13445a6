"""The ``cache`` middleware: serve a stored answer, or call the backend and store its answer.

Why it is shaped like this:

- **Policy before data.** A request that must not be cached (sampled, tools) bypasses the
  cache entirely, before any key is computed; an answer that must not be replayed (error,
  truncated or aborted stream, tool call, personal data) is never written. Every skip is a
  decision with a ``skip_reason`` on the response and on the span.
- **A store failure is a miss.** Stores are optional infrastructure: when Redis or Postgres
  is down the request goes to the backend, ``flowopt.cache.store_error`` is set on the
  span, and the user sees an ordinary answer.
- **Streams are first-class.** On a miss the stream is passed through untouched; a chunk
  hook records the chunk texts and a completion hook stores the answer only if the stream
  finished normally. On a hit, :func:`flowopt.stream.replay` yields the stored chunks:
  same chunk shape, byte-identical text.
- **Single flight.** Concurrent identical misses wait on one engine call and get its
  answer, marked ``coalesced`` (rules in :mod:`flowopt.cache._flight`). The leader's call
  is the one spawned task: it must outlive a leader whose client left while others wait.
- **No other spawned tasks.** Blocking stores and the embedding run in ``asyncio.to_thread``,
  which copies the context (OpenTelemetry stays attached); in-memory exact lookups run
  inline because a thread hop would cost more than the lookup.

Tool turns: an answer that calls tools is never stored; a conversation that holds tool
results bypasses the cache unless ``tool_results: pure`` names its tools in ``pure_tools``
(see :mod:`flowopt.cache.policy`). Tool call ids are random per run, so the key numbers
them in order instead (:mod:`flowopt.cache.keys`).

Request-level controls (``Request.metadata``): ``cache`` (False: bypass),
``cache.ttl_s`` (per-entry TTL), ``cache.tags`` (list of tags for invalidation).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from opentelemetry import trace

from flowopt.cache._capture import CAPTURE_TAG, capture_context
from flowopt.cache._flight import ALONE, RETRY, Flight, Flights, Outcome
from flowopt.cache.config import CacheConfig
from flowopt.cache.embedder import Embedder, MiniLMEmbedder
from flowopt.cache.engine import CacheEngine, Lookup, response_from_entry
from flowopt.cache.keys import CacheKey, cache_key
from flowopt.cache.policy import (
    PIIDetector,
    RegexPIIDetector,
    SkipReason,
    request_bypass_reason,
    response_skip_reason,
)
from flowopt.cache.stores import open_store
from flowopt.cache.stores.base import Store
from flowopt.cache.verifier import LearnedVerifier, Verifier
from flowopt.middleware.base import CallNext, MiddlewareBase, PipelineContext
from flowopt.middleware.options import make_options
from flowopt.stream import replay, when_final
from flowopt.tracing import content_capture_enabled
from flowopt.types import Decision, Request, Response, Usage

__all__ = ["CacheMiddleware", "split_for_replay"]

_ATTR = "flowopt.cache."


def split_for_replay(text: str, chunk_chars: int = 0) -> list[str]:
    """Chunks for replaying an answer that was stored whole: word by word (each piece
    carries its leading whitespace, like a token stream), or fixed-size pieces."""
    if not text:
        return [""]
    if chunk_chars > 0:
        return [text[i : i + chunk_chars] for i in range(0, len(text), chunk_chars)]
    out: list[str] = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        while i < n and not text[i].isspace():
            i += 1
        out.append(text[start:i])
        start = i
    return out


class CacheMiddleware(MiddlewareBase):
    """Exact + semantic answer cache with a verification stage (see the module docstring).

    Options are those of :class:`~flowopt.cache.config.CacheConfig` (``self.config``,
    also ``self.options``); objects can be injected for tests and embedding apps:
    ``store``, ``exact_store``, ``embedder``, ``verifier``, ``pii_detectors`` and
    ``model_identity`` (otherwise read from the backend at setup).
    """

    name = "cache"
    positional = "store"
    options_model = CacheConfig

    def __init__(
        self,
        config: CacheConfig | None = None,
        *,
        store: Store | str | None = None,
        exact_store: Store | str | None = None,
        embedder: Embedder | None = None,
        verifier: Verifier | None = None,
        pii_detectors: Sequence[PIIDetector] | None = None,
        model_identity: str | None = None,
        **options: Any,
    ) -> None:
        # In a spec, ``store``/``exact_store`` are names (config); in Python they may also
        # be store objects (injected).
        if isinstance(store, str):
            options["store"] = store
            store = None
        if isinstance(exact_store, str):
            options["exact_store"] = exact_store
            exact_store = None
        self.options = self.config = config = make_options(
            CacheConfig, config, options, name=self.name
        )
        self._store = store
        self._exact_store = exact_store
        self._embedder = embedder
        self._verifier = verifier
        detectors: list[PIIDetector] = []
        if config.pii:
            detectors.append(RegexPIIDetector(config.pii_patterns))
            detectors.extend(pii_detectors or ())
        self.pii_detectors = detectors
        self.model_identity = model_identity
        # Keep content for reuse beyond replay (flowopt.cache._capture) only when the
        # pipeline captures content; set from the pipeline's tracing at setup.
        self.capture_content = False
        self.engine: CacheEngine | None = None
        self._inline_exact = False
        self._setup_lock = asyncio.Lock()
        self.flights = Flights()
        self._orphans: set[asyncio.Task[Response]] = set()  # leader calls whose leader left

    # -- lifecycle ---------------------------------------------------------------------------
    async def setup(self, ctx: PipelineContext) -> None:
        """Read the served model's identity and open the stores (once)."""
        if self.engine is not None:
            return
        async with self._setup_lock:
            if self.engine is not None:
                return
            self.capture_content = (
                ctx.tracing.capture_content
                if ctx.tracing is not None
                else content_capture_enabled()
            )
            if self.model_identity is None:
                self.model_identity = await _identity(ctx)
            await asyncio.to_thread(self._open)

    def _open(self) -> None:
        cfg = self.config
        store = self._store
        if store is None:
            opts = dict(cfg.store_options)
            opts.setdefault("max_entries", cfg.max_entries)
            store = open_store(cfg.store, **opts)
        exact = self._exact_store
        if exact is None and cfg.exact_store:
            exact = open_store(cfg.exact_store, **dict(cfg.exact_store_options))
        embedder = self._embedder
        verifier = self._verifier
        if cfg.semantic:
            if embedder is None:
                embedder = MiniLMEmbedder(runtime=cfg.embedder_runtime)
            loader = getattr(embedder, "load", None)
            if loader is not None:
                loader()
            if cfg.verify and verifier is None:
                verifier = LearnedVerifier(
                    threshold=cfg.threshold, operating_point=cfg.operating_point
                )
        self.engine = CacheEngine(
            cfg, store, exact_store=exact, embedder=embedder, verifier=verifier
        )
        self._inline_exact = exact is None and not getattr(store, "blocking", True)

    async def aclose(self) -> None:
        if self.engine is None:
            return
        for s in (self.engine.exact_store, self.engine.store):
            if s is not None:
                await asyncio.to_thread(s.close)

    def _require_engine(self) -> CacheEngine:
        if self.engine is None:
            if self.model_identity is None:
                raise RuntimeError(
                    "the cache middleware was not set up: run it in a pipeline, call "
                    "`await cache.setup(ctx)`, or pass model_identity="
                )
            self._open()
        assert self.engine is not None
        return self.engine

    # -- the middleware --------------------------------------------------------------------
    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        start = time.perf_counter()
        span = trace.get_current_span()
        if request.metadata.get("cache", True) is False:
            return await self._bypass(request, call_next, SkipReason.DISABLED)
        cfg = self.config
        reason = request_bypass_reason(
            request,
            max_temperature=cfg.max_temperature,
            tool_results=cfg.tool_results,
            pure_tools=cfg.pure_tools,
        )
        if reason is not None:
            return await self._bypass(request, call_next, reason)
        engine = self._require_engine()
        assert self.model_identity is not None
        key = cache_key(request, model_identity=self.model_identity, scope=self.config.scope)

        if self._inline_exact:
            found = Lookup()
            entry = engine.lookup_exact(key, found)
            if entry is not None:
                found.entry, found.tier, found.score, found.verdict = entry, "exact", 1.0, "exact"
            elif self.config.semantic:
                found = await asyncio.to_thread(engine.lookup, key)
            else:
                found.verdict = "miss"
        else:
            found = await asyncio.to_thread(engine.lookup, key)
        if found.errors:
            _record_store_error(span, found.errors)

        if found.entry is not None:
            return self._serve(request, found, start)
        if not cfg.single_flight:
            return await self._miss(request, call_next, key, found, span)
        return await self._single_flight(request, call_next, key, found, span, start)

    # -- single flight (see flowopt.cache._flight) -------------------------------------------
    async def _single_flight(
        self,
        request: Request,
        call_next: CallNext,
        key: CacheKey,
        found: Lookup,
        span: trace.Span,
        start: float,
    ) -> Response:
        while True:
            flight, leader = self.flights.join(key.exact)
            if leader:
                return await self._lead(request, call_next, key, found, span, flight)
            outcome = await self.flights.wait(flight, request.remaining())
            if isinstance(outcome, tuple):
                self.flights.coalesced += 1
                return self._coalesced(request, outcome, start)
            if isinstance(outcome, BaseException):
                raise outcome  # the leader's error: one call, one outcome
            if outcome != RETRY:  # ALONE or TIMEOUT: this request calls the engine itself
                return await self._miss(request, call_next, key, found, span, alone=outcome)

    async def _lead(
        self,
        request: Request,
        call_next: CallNext,
        key: CacheKey,
        found: Lookup,
        span: trace.Span,
        flight: Flight,
    ) -> Response:
        task = asyncio.ensure_future(
            self._miss(request, call_next, key, found, span, flight=flight)
        )
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if flight.waiters and not task.done():
                # The leader's client left but others wait: the call goes on for them.
                self._orphans.add(task)
                task.add_done_callback(self._orphan_done)
            else:
                task.cancel()
                self.flights.land(key.exact, flight, RETRY)
            raise

    def _orphan_done(self, task: asyncio.Task[Response]) -> None:
        self._orphans.discard(task)
        if task.cancelled() or task.exception() is not None:
            return  # the flight was landed with the error by _miss
        response = task.result()
        if response.is_streaming:  # nobody reads it: drain it so the followers get it
            assert response.stream is not None
            drain = asyncio.ensure_future(response.stream.collect())
            self._orphans.add(drain)  # type: ignore[arg-type]
            drain.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task[Response]) -> None:
        self._orphans.discard(task)
        if not task.cancelled():
            task.exception()  # the error hook landed the flight; retrieve it here

    def _coalesced(self, request: Request, outcome: Outcome, start: float) -> Response:
        """A follower's answer: the leader's, replayed as a cache hit would be."""
        assert isinstance(outcome, tuple)
        leader, chunks = outcome
        wait_ms = round((time.perf_counter() - start) * 1000.0, 3)
        decision = self.decision("coalesced", hit=False, coalesced=True, wait_ms=wait_ms)
        response = leader.replace(stream=None, usage=Usage(), cached=True, decisions=())
        if request.stream:
            texts = (
                chunks
                if chunks is not None
                else split_for_replay(response.text, self.config.replay_chunk_chars)
            )
            return replay(response, chunk_texts=texts, started_at=start).with_decision(decision)
        response = response.replace(latency_ms=(time.perf_counter() - start) * 1000.0)
        return response.with_decision(decision)

    async def _bypass(self, request: Request, call_next: CallNext, reason: str) -> Response:
        response = await call_next(request)
        return response.with_decision(self.decision("bypass", hit=False, skip_reason=reason))

    def _serve(self, request: Request, found: Lookup, start: float) -> Response:
        entry = found.entry
        assert entry is not None
        detail: dict[str, Any] = {
            "hit": True,
            "tier": found.tier,
            "score": None if found.score is None else round(found.score, 4),
            "verdict": found.verdict,
            "probability": None if found.probability is None else round(found.probability, 4),
            "age_s": round(entry.age_s(), 3),
            "lookup_ms": round((time.perf_counter() - start) * 1000.0, 3),
        }
        if found.errors:
            detail["store_error"] = found.errors[0]
        if found.tier == "semantic":
            store = self.engine.store if self.engine is not None else None
            touch = getattr(store, "touch", None)
            if touch is not None:
                touch(entry.exact_key)
        response = response_from_entry(entry)
        decision = self.decision("hit", **detail)
        if request.stream:
            chunks = (
                list(entry.chunks)
                if entry.chunks is not None
                else split_for_replay(entry.text, self.config.replay_chunk_chars)
            )
            return replay(response, chunk_texts=chunks, started_at=start).with_decision(decision)
        response = response.replace(latency_ms=(time.perf_counter() - start) * 1000.0)
        return response.with_decision(decision)

    async def _miss(
        self,
        request: Request,
        call_next: CallNext,
        key: CacheKey,
        found: Lookup,
        span: trace.Span,
        *,
        flight: Flight | None = None,
        alone: str | None = None,
    ) -> Response:
        detail: dict[str, Any] = {"hit": False, "verdict": found.verdict}
        if alone is not None:
            detail["coalesce_skipped"] = alone
        if found.score is not None:
            detail["score"] = round(found.score, 4)
        if found.probability is not None:
            detail["probability"] = round(found.probability, 4)
        if found.errors:
            detail["store_error"] = found.errors[0]
        try:
            response = await call_next(request)
        except BaseException as exc:
            if flight is not None:
                gone = isinstance(exc, asyncio.CancelledError)
                self.flights.land(key.exact, flight, RETRY if gone else exc)
            if span.is_recording():
                span.set_attribute(_ATTR + "skip_reason", SkipReason.ERROR)
            raise

        chunks: list[str] | None = None  # a stream's chunk shape, replayed on a later hit
        if response.is_streaming:
            assert response.stream is not None
            chunks = []
            response.stream.on_chunk(lambda chunk: chunks.append(chunk.text))  # type: ignore[union-attr]
            # what the caller sees until the stream ends; replaced by the stored/skipped one
            response = response.with_decision(self.decision("miss", **detail))

        async def _complete(done: Response) -> Response:
            decision = await self._store_answer(request, key, done, found, chunks, detail, flight)
            return _replace_decision(done, decision)

        def _error(exc: BaseException) -> None:
            if flight is not None:  # an abandoned or cut stream leaves no answer to share
                self.flights.land(key.exact, flight, RETRY)
            if span.is_recording():
                span.set_attribute(_ATTR + "skip_reason", SkipReason.STREAM_ABORTED)
                span.set_attribute(_ATTR + "stored", False)

        return await when_final(response, _complete, _error)

    async def _store_answer(
        self,
        request: Request,
        key: CacheKey,
        response: Response,
        found: Lookup,
        chunks: list[str] | None,
        detail: dict[str, Any],
        flight: Flight | None = None,
    ) -> Decision:
        detail = dict(detail)
        skip = response_skip_reason(request, response, self.pii_detectors)
        if chunks is not None and "".join(chunks) != response.text:
            chunks = None  # the stream's text was rewritten downstream: replay it whole
        if flight is not None:  # followers get what a hit would give them, and only that
            self.flights.land(key.exact, flight, ALONE if skip is not None else (response, chunks))
        if skip is not None:
            detail["stored"] = False
            detail["skip_reason"], detail["skip_detail"] = skip
            return self.decision("miss", **detail)
        engine = self.engine
        assert engine is not None
        md = request.metadata
        ttl = md.get("cache.ttl_s")
        tags = md.get("cache.tags") or ()
        entry = engine.make_entry(
            key,
            response,
            vector=found.vector,
            chunks=chunks,
            ttl_s=float(ttl) if ttl is not None else None,
            tags=[str(t) for t in tags],
        )
        context = capture_context(request) if self.capture_content else None
        if context is not None:
            entry = replace(
                entry,
                tags=(*entry.tags, CAPTURE_TAG),
                response={**entry.response, "context": context},
            )
        if self._inline_exact and (found.vector is not None or not self.config.semantic):
            errors = engine.put(key, entry)
        else:
            errors = await asyncio.to_thread(engine.put, key, entry)
        if errors:
            detail["stored"] = False
            detail["skip_reason"] = SkipReason.STORE_ERROR
            detail["store_error"] = errors[0]
            _record_store_error(trace.get_current_span(), errors)
        else:
            detail["stored"] = True
        return self.decision("miss", **detail)


async def _identity(ctx: PipelineContext) -> str:
    """The served model identity. With several backends (triage, fallback below the
    cache) any of them may answer, so all their identities are part of it: a change to any
    model is a change of partition."""
    main = (await ctx.backend.model_info()).identity
    others = {
        name: (await b.model_info()).identity
        for name, b in sorted(ctx.backends.items())
        if b is not ctx.backend
    }
    if not others:
        return main
    return main + "|" + ",".join(f"{k}={v}" for k, v in others.items())


def _replace_decision(response: Response, decision: Decision) -> Response:
    kept = tuple(d for d in response.decisions if d.middleware != decision.middleware)
    return response.replace(decisions=(*kept, decision))


def _record_store_error(span: trace.Span, errors: list[str]) -> None:
    if not span.is_recording():
        return
    span.set_attribute(_ATTR + "store_error", errors[0])
    for err in errors:
        span.add_event("flowopt.cache.store_error", {"error": err})
