"""The ``memory`` middleware: working memory (trim) and long-term memory (recall, extract).

Order of work for one chat request:

1. **Trim** (``working_tokens``): :func:`~flowopt.memory.working.trim_history`.
2. **Recall** (``long_term``): search the key's memories with the last user turn (in a
   thread, bounded by ``recall_timeout_s``) and insert them as one delimited system message
   *right after the static system prompt*: the messages before it are the caller's own,
   byte for byte, so vLLM's prefix cache still hits on the static prompt.
3. **Answer**: ``call_next``.
4. **Queue extraction**: once the answer is final, the new user turn is appended to the
   persisted queue (:mod:`flowopt.memory._queue`); a worker thread extracts it later. The
   answer never waits for extraction.

Failures never fail the request: a store that cannot be opened or searched means no
recall, a ``store_error`` in the decision, a span event and a logged warning (without any
content). Identity: the key is the request's tenant (``default`` when unset) plus its
``user`` (``scope: user``), ``metadata['memory.agent']`` or ``metadata['memory.run']``.
Request metadata: ``memory`` (False: bypass), ``memory.extract`` (False: recall
only), ``memory.turn_id`` (the app's id of the new
turn; else ``<request_id>``), ``memory.conversation`` (debounce group), ``memory.date``.

Privacy: memory text is content; it is never logged or put on spans (counts and timings
only), and it is stored only because the pipeline enabled ``long_term``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, TraceFlags

from flowopt.cache.policy import PIIDetector, RegexPIIDetector
from flowopt.memory._queue import ExtractionJob, ExtractionQueue
from flowopt.memory.config import MemoryConfig
from flowopt.memory.extract import RESPONSE_FORMAT, Turn, attribute, build_messages, parse_facts
from flowopt.memory.store import LongTermStore, MemoryKey, Recalled, default_data_dir
from flowopt.memory.working import TokenCounter, approx_tokens, split_static_prefix, trim_history
from flowopt.messages import Message
from flowopt.middleware.base import CallNext, MiddlewareBase, PipelineContext
from flowopt.middleware.options import make_options
from flowopt.stream import when_final
from flowopt.tracing import get_tracer
from flowopt.types import Request, Response

__all__ = ["MEMORY_CLOSE", "MEMORY_OPEN", "MemoryMiddleware", "render_block"]

_log = logging.getLogger(__name__)
_ATTR = "flowopt.memory."
MEMORY_OPEN = "<memory>"
MEMORY_CLOSE = "</memory>"
_RETRY_S = 30.0
"""After the store fails to open, requests go on without it for this long before a retry."""
_HEADER = "What you remember about the user from earlier conversations (may be outdated):"


def render_block(memories: Sequence[Recalled], max_tokens: int) -> tuple[str, int, int]:
    """The injected block, best memories first, within ``max_tokens`` (~4 chars a token).
    Returns ``(text, memories kept, estimated tokens)``; empty text when none fit."""
    lines: list[str] = []
    used = (len(MEMORY_OPEN) + len(_HEADER) + len(MEMORY_CLOSE)) // 4 + 4
    for m in memories:
        line = f"- {m.text}" + (f" ({m.at[:10]})" if m.at else "")
        cost = len(line) // 4 + 1
        if used + cost > max_tokens:
            break
        lines.append(line)
        used += cost
    if not lines:
        return "", 0, 0
    return "\n".join([MEMORY_OPEN, _HEADER, *lines, MEMORY_CLOSE]), len(lines), used


class MemoryMiddleware(MiddlewareBase):
    """Working and long-term memory (see the module docstring). Options are those of
    :class:`~flowopt.memory.config.MemoryConfig`. Python may inject ``store`` (a
    :class:`LongTermStore`), ``pii_detectors`` and ``count_tokens``."""

    name = "memory"
    options_model = MemoryConfig

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        store: LongTermStore | None = None,
        pii_detectors: Sequence[PIIDetector] | None = None,
        count_tokens: TokenCounter | None = None,
        **options: Any,
    ) -> None:
        self.options = self.config = cfg = make_options(
            MemoryConfig, config, options, name=self.name
        )
        self.store = store
        self.queue: ExtractionQueue | None = None
        detectors: list[PIIDetector] = [] if cfg.allow_pii else [RegexPIIDetector()]
        detectors.extend(pii_detectors or ())
        self.pii_detectors = detectors
        self.count_tokens = count_tokens or approx_tokens
        self._setup_lock = asyncio.Lock()
        self._store_error: str | None = None
        self._retry_at = 0.0
        self._in_flight = 0  # requests inside this middleware now (read by the worker)

    def _under_load(self) -> bool:
        limit = self.config.defer_at_in_flight
        return limit is not None and self._in_flight >= limit

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return Path(self.config.data_dir) if self.config.data_dir else default_data_dir()

    async def setup(self, ctx: PipelineContext | None = None) -> None:
        """Open the store and start the extraction worker (once). Without ``ctx`` the LLM
        must be given in the options."""
        if not self.config.long_term or self.queue is not None:
            return
        if time.monotonic() < self._retry_at:  # the store failed recently: do not hammer it
            return
        async with self._setup_lock:
            if self.queue is not None:
                return
            if self.store is None:
                url, model = self.config.llm_base_url, self.config.llm_model
                if ctx is not None:
                    urls = getattr(ctx.backend, "base_urls", None) or []
                    url = url or (urls[0] if urls else None)
                    model = model or getattr(ctx.backend, "model", None)
                self.store = LongTermStore(
                    self.data_dir,
                    llm_base_url=url,
                    llm_model=model,
                    collection=self.config.collection,
                    postgres_url=self.config.postgres_url,
                )
            try:
                await asyncio.to_thread(self.store.open)
                self.queue = ExtractionQueue(
                    self.data_dir / "queue.db",
                    self._extract,
                    debounce_s=self.config.debounce_s,
                    max_pending=self.config.max_pending,
                    per_minute=self.config.extract_per_minute,
                    busy=self._under_load,
                )
            except Exception as exc:  # a broken store: no recall, no extraction, answers go on
                self._note_store_error(exc)
                self._retry_at = time.monotonic() + _RETRY_S
                return
            self.queue.start()

    async def aclose(self) -> None:
        queue, self.queue = self.queue, None
        if queue is not None:
            await asyncio.to_thread(queue.close)
        if self.store is not None:
            await asyncio.to_thread(self.store.close)

    def forget(
        self,
        *,
        tenant: str,
        user: str | None = None,
        agent: str | None = None,
        run: str | None = None,
    ) -> int:
        """Remove the key's memories from the vector store and Mem0's history."""
        if self.store is None:
            self.store = LongTermStore(
                self.data_dir,
                llm_base_url=None,
                llm_model=None,
                collection=self.config.collection,
                postgres_url=self.config.postgres_url,
            )
        return self.store.forget(MemoryKey(tenant, user, agent, run))

    # -- identity ----------------------------------------------------------------------
    def key_for(self, request: Request) -> MemoryKey | None:
        tenant = request.tenant or "default"
        scope = self.config.scope
        if scope == "user":
            return MemoryKey(tenant, user=request.user) if request.user else None
        value = request.metadata.get(f"memory.{scope}")
        if not value:
            return None
        return MemoryKey(tenant, **{scope: str(value)})

    # -- the middleware ----------------------------------------------------------------
    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        if request.kind != "chat" or request.metadata.get("memory", True) is False:
            return await call_next(request)
        self._in_flight += 1
        try:
            return await self._remember(request, call_next)
        finally:
            self._in_flight -= 1

    async def _remember(self, request: Request, call_next: CallNext) -> Response:
        detail: dict[str, Any] = {}
        if self.config.working_tokens is not None:
            request = self._trim(request, detail)
        key = self.key_for(request) if self.config.long_term else None
        if key is not None:
            request = await self.recall_into(request, key, detail)
        response = await call_next(request)
        decision = self.decision("memory", **detail)
        if key is None or request.metadata.get("memory.extract", True) is False:
            return response.with_decision(decision)
        turn = self._new_turn(request)
        link = trace.get_current_span().get_span_context()

        def _queue(done: Response) -> Response:
            if turn is None:
                return done
            queued = self.observe(key, [turn], link=link, conversation=_conv(request, key))
            return done.replace(
                decisions=tuple(d for d in done.decisions if d.middleware != self.name)
            ).with_decision(self.decision("memory", **detail, queued=queued))

        return await when_final(response.with_decision(decision), _queue)

    def _trim(self, request: Request, detail: dict[str, Any]) -> Request:
        budget = self.config.working_tokens
        assert budget is not None
        result = trim_history(request.messages, budget, count=self.count_tokens)
        detail["trimmed"] = result.dropped
        detail["tokens_before"] = result.tokens_before
        detail["tokens_after"] = result.tokens_after
        if result.over_budget:
            detail["over_budget"] = True
        if not result.dropped:
            return request
        return request.replace(messages=result.messages)

    async def recall_into(
        self, request: Request, key: MemoryKey, detail: dict[str, Any]
    ) -> Request:
        """Recall for ``request`` and return it with the memory block inserted (the same
        code path the eval measures)."""
        await self.setup()
        query = request.last_user_text
        tracer = get_tracer()
        start = time.perf_counter()
        with tracer.start_as_current_span("flowopt.memory.recall") as span:
            memories: list[Recalled] = []
            try:
                if self.queue is None:  # setup could not open the store
                    raise _StoreDown(self._store_error or "unavailable")
                memories = await asyncio.wait_for(
                    asyncio.to_thread(self._search, key, query), self.config.recall_timeout_s
                )
            except Exception as exc:
                err = self._note_store_error(exc)
                detail["store_error"] = err
                span.add_event("flowopt.memory.store_error", {"error": err})
                span.set_attribute(_ATTR + "store_error", err)
            block, count, tokens = render_block(memories, self.config.recall_tokens)
            ms = (time.perf_counter() - start) * 1000.0
            span.set_attribute(_ATTR + "recalled", count)
            span.set_attribute(_ATTR + "tokens_injected", tokens)
            span.set_attribute(_ATTR + "recall_ms", round(ms, 3))
        detail.update(recalled=count, tokens_injected=tokens, recall_ms=round(ms, 3))
        detail["memory_ids"] = [m.id for m in memories[:count]]
        if not block:
            return request
        msgs = request.messages
        at = split_static_prefix(msgs)
        injected = (*msgs[:at], Message("system", block), *msgs[at:])
        return request.replace(messages=injected)

    def _search(self, key: MemoryKey, query: str) -> list[Recalled]:
        assert self.store is not None
        found = self.store.search(
            key, query, top_k=self.config.top_k, min_score=self.config.min_score
        )
        self._store_error = None
        return found

    def _note_store_error(self, exc: BaseException) -> str:
        if isinstance(exc, _StoreDown):
            return str(exc)
        err = type(exc).__name__ if not isinstance(exc, TimeoutError) else "timeout"
        if self._store_error != err:
            _log.warning("memory store unavailable (%s): answering without recall", err)
        self._store_error = err
        return err

    # -- extraction --------------------------------------------------------------------
    @staticmethod
    def _new_turn(request: Request) -> Turn | None:
        for m in reversed(request.messages):
            if m.role == "user":
                tid = str(request.metadata.get("memory.turn_id") or request.request_id)
                date = request.metadata.get("memory.date")
                return Turn(tid, "user", m.text, str(date) if date else None)
        return None

    def observe(
        self,
        key: MemoryKey,
        turns: Sequence[Turn],
        *,
        link: SpanContext | None = None,
        conversation: str | None = None,
    ) -> bool:
        """Queue ``turns`` for extraction into ``key``'s memories; False when shed."""
        if self.queue is None:
            return False
        payload: dict[str, Any] = {
            "key": {"tenant": key.tenant, "user": key.user, "agent": key.agent, "run": key.run},
            "turns": [t.__dict__ for t in turns],
        }
        if link is not None and link.is_valid:
            payload["link"] = [f"{link.trace_id:032x}", f"{link.span_id:016x}"]
        return self.queue.put(conversation or key.scope, payload)

    def _extract(self, job: ExtractionJob) -> None:
        """Worker thread: one extraction for a conversation's pending turns."""
        assert self.store is not None
        first = job.payloads[0]
        key = MemoryKey(**first["key"])
        turns = [Turn(**t) for p in job.payloads for t in p["turns"]]
        links = []
        for p in job.payloads:
            if "link" in p:
                ctx = SpanContext(int(p["link"][0], 16), int(p["link"][1], 16), True, TraceFlags(1))
                links.append(Link(ctx))
        tracer = get_tracer()
        root = otel_context.Context()  # a trace of its own, linked to the requests
        with tracer.start_as_current_span(
            "flowopt.memory.extract", context=root, links=links
        ) as span:
            span.set_attribute(_ATTR + "turns", len(turns))
            start = time.perf_counter()
            now = datetime.now(UTC).isoformat(timespec="seconds")
            if self.config.episodic:
                episodes = [
                    (
                        t.id,
                        t.text if t.speaker == "user" else f"{t.speaker}: {t.text}",
                        t.date or now,
                    )
                    for t in turns
                    if t.text.strip() and not self._flagged(t.text)
                ]
                kept = self.store.add_episodes(key, episodes)
                span.set_attribute(_ATTR + "episodes", len(kept))
            if self.config.extractor == "none":
                return
            if self.config.extractor == "mem0":
                msgs = [{"role": "user", "content": f"{t.speaker}: {t.text}"} for t in turns]
                ids = self.store.add_with_mem0(key, msgs, sources=[t.id for t in turns], at=now)
                span.set_attribute(_ATTR + "stored", len(ids))
                return
            mem = self.store.open()
            raw = mem.llm.generate_response(
                messages=build_messages(turns), response_format=RESPONSE_FORMAT
            )
            facts = [f for f in parse_facts(str(raw or "")) if not self._flagged(f)]
            span.set_attribute(_ATTR + "facts", len(facts))
            embed = mem.embedding_model.langchain_model.inner.embed_many
            sources = attribute(facts, turns, embed)
            stored = 0
            for fact, src in zip(facts, sources, strict=True):
                date = next((t.date for t in turns if t.id in src and t.date), None)
                stored += len(self.store.add_facts(key, [fact], sources=src, at=date or now))
            span.set_attribute(_ATTR + "stored", stored)
            span.set_attribute(_ATTR + "extract_ms", round((time.perf_counter() - start) * 1e3, 1))

    def _flagged(self, text: str) -> bool:
        return any(d.detect(text) for d in self.pii_detectors)


class _StoreDown(Exception):
    """The store could not be opened at setup; the message is the recorded error."""


def _said(turn: Turn) -> str:
    """An episode's text: the turn, with its speaker's name when it is not the app's user
    (in a multi-party conversation the name is part of what was said)."""
    return turn.text if turn.speaker == "user" else f"{turn.speaker}: {turn.text}"


def _conv(request: Request, key: MemoryKey) -> str:
    conv = request.metadata.get("memory.conversation")
    return f"{key.scope}#{conv}" if conv else key.scope
