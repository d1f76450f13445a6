"""The ``compress`` middleware: LLMLingua on the marked spans, only when it pays.

Per request: find the marked spans (:mod:`~flowopt.compress.marks`; none: pass through);
count tokens; if the prompt would overflow the model's window, fit it (compress to fit,
map-reduce, or a :class:`PromptTooLongError` saying by how much); otherwise predict the
saving (:mod:`~flowopt.compress.decide`) and compress only when it beats the margin. The
compressed text replaces only the marked spans: system messages, the static prefix and the
question reach the server byte for byte. After the answer, the backend's measured speed
updates its prefill model, so the next decision is made on fresher numbers.

The decision goes on the span as ``flowopt.compress.*``: action (``compressed``,
``skipped``, ``map_reduce``), reason, ratio, tokens before/after, predicted and measured
saving. No prompt text is ever recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from flowopt.compress._calibrate import calibrate
from flowopt.compress._mapreduce import chunk_passages, map_reduce
from flowopt.compress._select import Selection, select
from flowopt.compress.decide import CostModel, Forecast, PrefillModel, RecentPrefixes, predict
from flowopt.compress.marks import Span, find_spans, question_of
from flowopt.compress.options import CompressOptions
from flowopt.compress.ranker import MiniLMRanker, Ranker
from flowopt.compress.scorer import LLMLinguaScorer, Scorer
from flowopt.errors import InvalidRequestError
from flowopt.middleware.base import CallNext, MiddlewareBase, PipelineContext
from flowopt.middleware.options import make_options
from flowopt.stream import when_final
from flowopt.types import Request, Response

__all__ = ["Compress", "PromptTooLongError"]


class PromptTooLongError(InvalidRequestError):
    """The prompt does not fit the model's window and the pipeline chose not to (or could
    not) make it fit. ``over_by``: tokens over; ``window``: the model's ``max_model_len``."""

    code = "flowopt.prompt_too_long"

    def __init__(self, message: str, *, over_by: int, window: int, **kw: Any) -> None:
        self.over_by = over_by
        self.window = window
        super().__init__(message, **kw)


class Compress(MiddlewareBase):
    """Compress marked long context with LLMLingua when the predicted saving pays."""

    name = "compress"
    options_model = CompressOptions

    def __init__(self, options: CompressOptions | None = None, /, **kwargs: Any) -> None:
        self.options = opts = make_options(CompressOptions, options, kwargs, name=self.name)
        scorer = opts.scorer
        self.scorer: Scorer = (
            scorer
            if scorer is not None and not isinstance(scorer, str)
            else LLMLinguaScorer(scorer)
        )
        self._ctx: PipelineContext | None = None
        self._prefill: dict[str, PrefillModel] = {}
        self.cost = CostModel(opts.prior_cost_ms_per_token / 1000.0)
        self._recent = RecentPrefixes()
        self._done: OrderedDict[str, Selection] = OrderedDict()
        self._windows: dict[str, int | None] = {}
        self.ranker: Ranker | None = MiniLMRanker() if opts.ranker == "minilm" else None
        self._calibrating = asyncio.Lock()

    async def setup(self, ctx: PipelineContext) -> None:
        self._ctx = ctx

    # -- state the decision reads ----------------------------------------------------------
    def prefill_model(self, request: Request) -> PrefillModel:
        """The learned prefill model of the backend+model ``request`` goes to."""
        key = f"{request.route or 'default'}|{request.model or ''}"
        model = self._prefill.get(key)
        if model is None:
            model = self._prefill[key] = PrefillModel(self.options.prior_prefill_tps)
        return model

    async def _window(self, request: Request) -> int | None:
        if self.options.max_model_len is not None:
            return self.options.max_model_len
        route = request.route or "default"
        if route not in self._windows:
            ctx = self._ctx
            backend = None if ctx is None else (ctx.backends.get(route) or ctx.backend)
            info = getattr(backend, "model_info", None)
            self._windows[route] = (await info()).max_model_len if info is not None else None
        return self._windows[route]

    # -- the call ---------------------------------------------------------------------------
    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        opts = self.options
        spans = find_spans(request, roles=opts.roles, keep_turns=opts.keep_turns)
        if not spans:
            return await self._send(request, call_next, self.decision("skipped", reason="unmarked"))
        texts = [_text(request, s) for s in spans]
        question = question_of(request, spans)
        counts, prompt_tokens = await asyncio.to_thread(self._count, request, texts)
        tokens = sum(counts)
        detail: dict[str, Any] = {"tokens_before": tokens, "prompt_tokens": prompt_tokens}
        window = await self._window(request)
        reserve = request.params.max_tokens or opts.output_reserve
        limit = None if window is None else int(window * (1 - opts.window_slack)) - reserve
        budget = opts.target_tokens or tokens / opts.ratio
        reason = "pays"
        if limit is not None and prompt_tokens > limit:
            over = prompt_tokens - limit
            room = tokens - over  # what the marked content may keep
            fits = room > 0 and tokens / room <= opts.max_ratio
            if opts.overflow == "map_reduce" or (opts.overflow == "compress" and not fits):
                if opts.overflow == "map_reduce" and limit - (prompt_tokens - tokens) > 64:
                    return await self._map_reduce(
                        request,
                        spans,
                        texts,
                        counts,
                        limit - (prompt_tokens - tokens),
                        call_next,
                        detail,
                    )
                raise self._too_long(request, prompt_tokens, limit, window or 0, over)
            if opts.overflow == "error":
                raise self._too_long(request, prompt_tokens, limit, window or 0, over)
            budget, reason = min(budget, room), "fit"
        else:
            skip = self._skip_reason(request, tokens)
            if skip is None and opts.when == "auto" and opts.calibrate and not self.cost.samples:
                await self._calibrate()
            forecast = predict(
                tokens,
                tokens / budget,
                self.prefill_model(request),
                self.cost,
                reuse=self._key(texts, question, budget) in self._done,
            )
            detail.update(_forecast(forecast))
            if skip is None and opts.when == "auto" and forecast.saving_ms < opts.margin_ms:
                skip = "not_worth"
            if skip is not None:
                self._recent.add(request.content_hash())
                decision = self.decision("skipped", reason=skip, **detail)
                return await self._send(request, call_next, decision)
        key = self._key(texts, question, budget)
        started = time.perf_counter()
        sel = self._done.get(key)
        reused = sel is not None
        if sel is None:
            sel = await asyncio.to_thread(
                select,
                self.scorer,
                texts,
                question=question,
                target_tokens=max(1, int(budget)),
                coarse=opts.coarse,
                ranker=self.ranker,
            )
            self._remember(key, sel)
            self.cost.observe(tokens, time.perf_counter() - started)
        compress_ms = (time.perf_counter() - started) * 1000.0
        if reason != "fit" and sel.ratio < 1.2:  # all protected, or nothing to drop
            self._recent.add(request.content_hash())
            detail.update(tokens_after=sel.tokens_after, ratio=round(sel.ratio, 3))
            decision = self.decision("skipped", reason="incompressible", **detail)
            return await self._send(request, call_next, decision)
        if reason == "fit" and limit is not None:
            after_prompt = prompt_tokens - tokens + sel.tokens_after
            if after_prompt > limit:
                raise self._too_long(
                    request, after_prompt, limit, window or 0, after_prompt - limit
                )
        detail.update(
            reason=reason,
            tokens_after=sel.tokens_after,
            ratio=round(sel.ratio, 3),
            compress_ms=round(compress_ms, 2),
            reused=reused,
            passages_dropped=sel.dropped_passages,
            protected_tokens=sel.protected_tokens,
        )
        out = _rebuild(request, spans, sel.passages)
        return await self._send(
            out,
            call_next,
            self.decision("compressed", **detail),
            saved_tokens=(sel.tokens_before - sel.tokens_after, compress_ms),
        )

    async def _calibrate(self) -> None:
        """Measure the compressor once before the first ``auto`` decision (concurrent first
        requests wait for the one measurement), so it is never made on the prior."""
        async with self._calibrating:
            if self.cost.samples:
                return
            opts = self.options
            tokens, seconds = await asyncio.to_thread(
                calibrate, self.scorer, self.ranker, ratio=opts.ratio, coarse=opts.coarse
            )
            self.cost.observe(tokens, seconds)

    def _skip_reason(self, request: Request, tokens: int) -> str | None:
        if self.options.when == "never":
            return "disabled"
        if self.options.when == "always":
            return None
        if tokens < self.options.min_tokens:
            return "short"
        if request.content_hash() in self._recent:
            return "prefix_cached"
        return None

    def _count(self, request: Request, texts: list[str]) -> tuple[list[int], int]:
        counts = [self.scorer.count_tokens(t) for t in texts]
        total = sum(
            self.scorer.count_tokens(m.content) + 4
            for m in request.messages
            if isinstance(m.content, str)
        )
        return counts, total

    def _key(self, texts: Sequence[str], question: str, budget: float) -> str:
        h = hashlib.blake2b(digest_size=16)
        for part in (*texts, question, f"{int(budget)}|{self.options.coarse}"):
            h.update(part.encode())
            h.update(b"\x00")
        return h.hexdigest()

    def _remember(self, key: str, sel: Selection) -> None:
        self._done[key] = sel
        while len(self._done) > 256:
            self._done.popitem(last=False)

    def _too_long(
        self, request: Request, tokens: int, limit: int, window: int, over: int
    ) -> PromptTooLongError:
        return PromptTooLongError(
            f"the prompt is about {tokens} tokens, {over} over what fits the model's window "
            f"({window} tokens less the answer's reserve and a safety margin: {limit})",
            over_by=over,
            window=window,
            request_id=request.request_id,
            hint="shorten the marked context, raise max_ratio, or set overflow: map_reduce",
        )

    async def _map_reduce(
        self,
        request: Request,
        spans: list[Span],
        texts: list[str],
        counts: list[int],
        room: int,
        call_next: CallNext,
        detail: dict[str, Any],
    ) -> Response:
        chunks = await asyncio.to_thread(
            chunk_passages, texts, counts, room, self.scorer.count_tokens
        )
        response, calls = await map_reduce(
            request, spans, chunks, lambda t: _rebuild(request, spans, t), call_next
        )
        decision = self.decision("map_reduce", reason="overflow", chunks=calls, **detail)
        return await when_final(response, lambda r: r.with_decision(decision))

    async def _send(
        self,
        request: Request,
        call_next: CallNext,
        decision: Any,
        saved_tokens: tuple[int, float] | None = None,
    ) -> Response:
        response = await call_next(request)
        prefill = self.prefill_model(request)

        def account(final: Response) -> Response:
            if not final.cached and final.latency_ms:
                usage = final.usage
                uncached = max(0, usage.input_tokens - usage.cached_input_tokens)
                ttft = final.ttft_ms is not None
                seconds = (final.ttft_ms if ttft else final.latency_ms) or 0.0
                prefill.observe(uncached, usage.output_tokens, seconds / 1000.0, ttft=ttft)
            if saved_tokens is not None:
                removed, spent_ms = saved_tokens
                measured = removed * prefill.seconds_per_prefill_token * 1000.0 - spent_ms
                detail = {**decision.detail, "measured_saving_ms": round(measured, 2)}
                return final.with_decision(self.decision(decision.action, **detail))
            return final.with_decision(decision)

        return await when_final(response, account)


def _forecast(f: Forecast) -> dict[str, float]:
    return {
        "predicted_saving_ms": round(f.saving_ms, 2),
        "prefill_tps": round(f.prefill_tps, 1),
        "predicted_cost_ms": round(f.compress_cost_ms, 2),
    }


def _text(request: Request, span: Span) -> str:
    content = request.messages[span.message].content
    assert isinstance(content, str)
    return content[span.start : span.end]


def _rebuild(request: Request, spans: Sequence[Span], texts: Sequence[str | None]) -> Request:
    """``request`` with each span's text replaced (None: removed); other bytes untouched."""
    messages = list(request.messages)
    for span, text in sorted(
        zip(spans, texts, strict=True), key=lambda p: (p[0].message, -p[0].start)
    ):
        content = messages[span.message].content
        assert isinstance(content, str)
        new = content[: span.start] + (text or "") + content[span.end :]
        messages[span.message] = replace(messages[span.message], content=new)
    return request.replace(messages=tuple(messages))
