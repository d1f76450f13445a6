"""The fused node of a speculated edge A -> B: only verified results reach the graph.

LangGraph commits a node's writes (and checkpoints them) as soon as the node returns, so
speculation cannot span two nodes: B would write a guessed result before anyone checked
it. The graph module therefore builds A and B as *one* node (named A) for a speculated
edge, and this class runs it:

1. ask the guesser, pass the guesses through the :class:`~flowopt.speculate.gate.Gate`;
2. start B on each admitted guess (A's output set to the guessed label) in its own task,
   with a private hop log and streaming off (no guessed token may reach a caller);
3. run A for real. A fails: every speculative B is cancelled and A's error propagates,
   exactly as without speculation;
4. A's real output equals a guess: B ran on exactly the state a plain run would give it,
   so its result is committed (its hops join the run's, its text is streamed as one
   event). If that speculative B *failed*, B is re-run plainly: a failure of a guessed
   request is never surfaced, and the run behaves as the non-speculative one would
   (same single call, same error if that call fails too);
5. otherwise every speculative B is cancelled (the task's cancellation closes the HTTP
   connection, which is what makes vLLM abort the request) and B runs on A's output.

Whatever happens, the node returns the same writes a plain A-then-B run would.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from opentelemetry import trace

from flowopt._run_options import RunOptions, run_options
from flowopt._speculate_spec import SpeculateSpec, edge_labels
from flowopt.result import Hop, TokenEvent
from flowopt.speculate.gate import Gate
from flowopt.speculate.guessers import Guess, Guesser

__all__ = ["Speculator"]

NodeFn = Callable[[Any, dict[str, Any], RunnableConfig], Awaitable[dict[str, Any]]]


def _input_text(state: dict[str, Any]) -> str:
    value = state.get("input")
    if isinstance(value, str):
        return value
    messages = state.get("messages") or []
    for m in reversed(messages):
        text = getattr(m, "text", None) or (m.get("content") if isinstance(m, dict) else None)
        if isinstance(text, str):
            return text
    return "" if value is None else str(value)


def _tokens(hops: Sequence[Hop]) -> int:
    return sum(h.response.usage.input_tokens + h.response.usage.output_tokens for h in hops)


@dataclasses.dataclass
class _Branch:
    guess: Guess
    task: asyncio.Future[dict[str, Any]]
    opts: RunOptions
    started: float


class Speculator:
    """Runs the fused A+B node of one speculated edge (see the module docstring)."""

    def __init__(
        self,
        edge: SpeculateSpec,
        spec: Any,
        run: NodeFn,
        guesser: Guesser,
        gate: Gate,
        tracer: trace.Tracer,
    ) -> None:
        by_name = {s.name: s for s in spec.steps}
        self.edge = edge
        self.a = by_name[edge.source]
        self.b = by_name[edge.target]
        self.labels = edge_labels(spec, edge)
        self.run = run
        self.guesser = guesser
        self.gate = gate
        self.tracer = tracer
        self.__name__ = f"speculate_{self.a.name}_{self.b.name}"

    @property
    def stats(self) -> Any:
        return self.gate.stats

    async def __call__(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        opts = run_options(config)
        with self.tracer.start_as_current_span(
            f"speculation {self.edge.edge}", context=opts.parent
        ) as span:
            span.set_attribute("flowopt.speculation.edge", self.edge.edge)
            text = _input_text(state)
            guesses = self.guesser.guess(text, self.labels, self.edge.top_k)
            guesses = [g for g in guesses if g.label in self.labels]
            if guesses:
                span.set_attribute("flowopt.speculation.guess", guesses[0].label)
                span.set_attribute("flowopt.speculation.confidence", guesses[0].confidence)
            admitted, why = self.gate.admit(guesses)
            self.stats.runs += 1
            branches = [self._start(g, state, config, opts) for g in admitted]
            try:
                out = await self._finish(state, config, opts, branches, span, why)
            finally:
                await self._cancel(branches)
            return out

    def _start(
        self, guess: Guess, state: dict[str, Any], config: RunnableConfig, opts: RunOptions
    ) -> _Branch:
        guessed = {**state, self.a.output_key: guess.label}
        sopts = dataclasses.replace(opts, stream=False, hops=[])
        sconfig: RunnableConfig = {
            **config,
            "configurable": {**(config.get("configurable") or {}), "flowopt": sopts},
        }
        task = asyncio.ensure_future(self.run(self.b, guessed, sconfig))
        return _Branch(guess, task, sopts, time.perf_counter())

    @staticmethod
    async def _cancel(branches: Sequence[_Branch]) -> None:
        live = [b.task for b in branches if not b.task.done()]
        for t in live:
            t.cancel()
        for t in live:
            with contextlib.suppress(BaseException):
                await t

    async def _finish(
        self,
        state: dict[str, Any],
        config: RunnableConfig,
        opts: RunOptions,
        branches: list[_Branch],
        span: trace.Span,
        why: str,
    ) -> dict[str, Any]:
        stats = self.stats
        started = time.perf_counter()
        try:
            ua = await self.run(self.a, state, config)
        except BaseException:
            if branches:
                stats.a_failed += 1
                span.set_attribute("flowopt.speculation.outcome", "a_failed")
            raise
        a_done = time.perf_counter()
        stats.observe_t1((a_done - started) * 1000.0)
        actual = ua.get(self.a.output_key)
        self.guesser.observe(_input_text(state), str(actual))
        real = {**state, **ua}
        hit = next((b for b in branches if b.guess.label == actual), None)
        if not branches:
            span.set_attribute("flowopt.speculation.outcome", f"skipped:{why}")
            ub = await self._plain(real, config, opts)
        else:
            stats.speculated += 1
            judged = branches[0]
            stats.conf_sum += judged.guess.confidence
            stats.hits += hit is not None
            stats.misses += hit is None
            losers = [b for b in branches if b is not hit]
            wasted = self._waste(losers, a_done)
            stats.cancelled += sum(not b.task.done() for b in losers)
            await self._cancel(losers)
            stats.wasted_tokens += wasted
            span.set_attribute("flowopt.speculation.wasted_tokens", wasted)
            span.set_attribute("flowopt.speculation.branches", len(branches))
            if hit is None:
                t0 = time.perf_counter()
                ub = await self._plain(real, config, opts)
                lost = (t0 - a_done) * 1000.0  # the cancellation's own delay
                stats.lost_ms += lost
                span.set_attribute("flowopt.speculation.outcome", "miss")
                span.set_attribute("flowopt.speculation.lost_ms", round(lost, 2))
            else:
                ub = await self._commit(hit, real, config, opts, a_done, span)
        return {**ua, **ub, "_trail": [*ua.get("_trail", []), *ub.get("_trail", [])]}

    def _waste(self, losers: Sequence[_Branch], a_done: float) -> int:
        """Tokens spent on wrong guesses: counted from the response when the branch
        finished, else estimated from the share of B's usual time it ran."""
        s = self.stats
        total = 0
        for b in losers:
            if b.task.done() and not b.task.cancelled() and b.task.exception() is None:
                total += _tokens(b.opts.hops)
            elif s.t2_ms > 0 and s.b_runs:
                share = min(1.0, (a_done - b.started) * 1000.0 / s.t2_ms)
                total += int(share * s.b_tokens / s.b_runs)
        return total

    async def _plain(
        self, real: dict[str, Any], config: RunnableConfig, opts: RunOptions
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        n = len(opts.hops)
        ub = await self.run(self.b, real, config)
        self.stats.observe_t2((time.perf_counter() - t0) * 1000.0)
        self.stats.b_tokens += _tokens(opts.hops[n:])
        self.stats.b_runs += 1
        return ub

    async def _commit(
        self,
        hit: _Branch,
        real: dict[str, Any],
        config: RunnableConfig,
        opts: RunOptions,
        a_done: float,
        span: trace.Span,
    ) -> dict[str, Any]:
        try:
            ub = await hit.task
        except asyncio.CancelledError:
            raise
        except Exception:
            span.set_attribute("flowopt.speculation.outcome", "hit_rerun")
            return await self._plain(real, config, opts)
        b_done = time.perf_counter()
        b_ms = (b_done - hit.started) * 1000.0
        saved = max(0.0, min(a_done, b_done) - hit.started) * 1000.0
        self.stats.observe_t2(b_ms)
        self.stats.saved_ms += saved
        self.stats.b_tokens += _tokens(hit.opts.hops)
        self.stats.b_runs += 1
        opts.hops.extend(hit.opts.hops)
        if opts.stream:
            from langgraph.config import get_stream_writer

            text = ub.get(self.b.output_key)
            if isinstance(text, str) and text and self.b.kind == "llm":
                get_stream_writer()(TokenEvent(self.b.name, text))
        span.set_attribute("flowopt.speculation.outcome", "hit")
        span.set_attribute("flowopt.speculation.saved_ms", round(saved, 2))
        return ub
