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

Whatever happens, the node returns the same writes a plain A-then-B run would. Each run
also leaves one :class:`~flowopt.result.Speculation` record (outcome, saved or lost
time, wasted tokens and cost) on the run's result and hands it to the edge's
``observers`` (the gateway's Prometheus counters subscribe there).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from opentelemetry import trace

from flowopt._run_options import RunOptions, run_options
from flowopt._speculate_spec import SpeculateSpec, edge_labels
from flowopt.result import Hop, Speculation, TokenEvent
from flowopt.speculate.gate import Gate
from flowopt.speculate.guessers import Guess, Guesser
from flowopt.types import Usage

__all__ = ["Observer", "Speculator"]

NodeFn = Callable[[Any, dict[str, Any], RunnableConfig], Awaitable[dict[str, Any]]]
Observer = Callable[[str, Speculation], None]
"""Called with (pipeline name, record) after every run of a speculated edge."""

_log = logging.getLogger("flowopt.speculate")


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


def _usage(hops: Sequence[Hop]) -> Usage:
    total = Usage()
    for h in hops:
        total = total + h.response.usage
    return total


def _cost(hops: Sequence[Hop]) -> float | None:
    costs = [h.response.cost for h in hops if h.response.cost is not None]
    return sum(costs) if costs else None


@dataclasses.dataclass
class _Branch:
    guess: Guess
    task: asyncio.Future[dict[str, Any]]
    opts: RunOptions
    started: float


@dataclasses.dataclass
class _Tally:
    """What one run of the edge did (becomes its :class:`Speculation` record)."""

    outcome: str = "a_failed"
    saved_ms: float = 0.0
    lost_ms: float = 0.0
    wasted: Usage = dataclasses.field(default_factory=Usage)
    cost: float | None = None
    estimated: bool = False
    queue_unknown: bool = False
    reserved: float = 0.0  # tokens the gate reserved for this run's guesses


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
        self.pipeline = str(spec.name)
        self.a = by_name[edge.source]
        self.b = by_name[edge.target]
        self.labels = edge_labels(spec, edge)
        self.run = run
        self.guesser = guesser
        self.gate = gate
        self.tracer = tracer
        self.observers: list[Observer] = []
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
            # read now: another run's decision may overwrite the gate's flag meanwhile
            tally = _Tally(
                outcome=f"skipped_{why}",
                queue_unknown=self.gate.queue_unknown,
                reserved=self.gate.reserved,
            )
            if tally.queue_unknown:
                span.set_attribute("flowopt.speculation.queue_unknown", True)
            self.stats.runs += 1
            branches = [self._start(g, state, config, opts) for g in admitted]
            try:
                return await self._finish(state, config, opts, branches, guesses, tally)
            finally:
                await self._cancel(branches)
                self._account(tally, guesses, len(branches), opts, span)

    def _account(
        self,
        tally: _Tally,
        guesses: Sequence[Guess],
        branches: int,
        opts: RunOptions,
        span: trace.Span,
    ) -> None:
        """Record the run: span, the edge's figures, the result's ledger, observers."""
        s = self.stats
        s.wasted_input_tokens += tally.wasted.input_tokens
        s.wasted_output_tokens += tally.wasted.output_tokens
        s.wasted_cost += tally.cost or 0.0
        s.saved_ms += tally.saved_ms
        s.lost_ms += tally.lost_ms
        self.gate.settle(tally.reserved)  # the run's real waste is counted above
        span.set_attribute("flowopt.speculation.outcome", tally.outcome)
        if branches:
            span.set_attribute("flowopt.speculation.branches", branches)
            span.set_attribute("flowopt.speculation.wasted_tokens", tally.wasted.total_tokens)
            span.set_attribute("flowopt.speculation.saved_ms", round(tally.saved_ms, 2))
            span.set_attribute("flowopt.speculation.lost_ms", round(tally.lost_ms, 2))
        record = Speculation(
            edge=self.edge.edge,
            outcome=tally.outcome,
            guess=guesses[0].label if guesses else None,
            confidence=guesses[0].confidence if guesses else None,
            branches=branches,
            saved_ms=tally.saved_ms,
            lost_ms=tally.lost_ms,
            wasted=tally.wasted,
            wasted_cost=tally.cost,
            estimated=tally.estimated,
            queue_unknown=tally.queue_unknown,
        )
        opts.speculation.append(record)
        for observer in self.observers:
            try:
                observer(self.pipeline, record)
            except Exception:  # an observer never breaks a run
                _log.exception("speculation observer %r failed", observer)

    def _start(
        self, guess: Guess, state: dict[str, Any], config: RunnableConfig, opts: RunOptions
    ) -> _Branch:
        guessed = {**state, self.a.output_key: guess.label}
        sopts = dataclasses.replace(opts, stream=False, hops=[], speculation=[])
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
        guesses: Sequence[Guess],
        tally: _Tally,
    ) -> dict[str, Any]:
        stats = self.stats
        started = time.perf_counter()
        try:
            ua = await self.run(self.a, state, config)
        except BaseException:
            if branches:
                stats.a_failed += 1
                tally.outcome = "a_failed"
                self._waste(branches, time.perf_counter(), tally)
            raise
        a_done = time.perf_counter()
        stats.observe_t1((a_done - started) * 1000.0)
        actual = ua.get(self.a.output_key)
        self.guesser.observe(_input_text(state), str(actual))
        self.gate.judge(guesses, str(actual))
        real = {**state, **ua}
        hit = next((b for b in branches if b.guess.label == actual), None)
        if not branches:
            ub = await self._plain(real, config, opts)
        else:
            stats.speculated += 1
            stats.hits += hit is not None
            stats.misses += hit is None
            losers = [b for b in branches if b is not hit]
            stats.cancelled += sum(not b.task.done() for b in losers)
            self._waste(losers, a_done, tally)
            await self._cancel(losers)
            if hit is None:
                t0 = time.perf_counter()
                tally.outcome = "miss"
                tally.lost_ms = (t0 - a_done) * 1000.0  # the cancellation's own delay
                ub = await self._plain(real, config, opts)
            else:
                ub = await self._commit(hit, real, config, opts, a_done, tally)
        return {**ua, **ub, "_trail": [*ua.get("_trail", []), *ub.get("_trail", [])]}

    def _waste(self, losers: Sequence[_Branch], now: float, tally: _Tally) -> None:
        """Tokens (and cost) spent on discarded branches: from the response when the
        branch finished, else estimated from the share of B's usual time it ran."""
        s = self.stats
        for b in losers:
            if b.task.done() and not b.task.cancelled() and b.task.exception() is None:
                used, cost = _usage(b.opts.hops), _cost(b.opts.hops)
            elif s.t2_ms > 0 and s.b_runs:
                share = min(1.0, (now - b.started) * 1000.0 / s.t2_ms)
                used = Usage(
                    round(share * s.b_input_tokens / s.b_runs),
                    round(share * s.b_output_tokens / s.b_runs),
                )
                cost = share * s.b_cost / s.b_priced if s.b_priced else None
                tally.estimated = True
            else:
                continue  # B never completed here yet: nothing to estimate from
            tally.wasted = tally.wasted + used
            if cost is not None:
                tally.cost = (tally.cost or 0.0) + cost
            if s.b_runs and s.b_tokens:
                s.observe_miss_share(used.total_tokens / (s.b_tokens / s.b_runs))

    def _count_b(self, hops: Sequence[Hop], ms: float) -> None:
        s = self.stats
        s.observe_t2(ms)
        used, cost = _usage(hops), _cost(hops)
        s.b_input_tokens += used.input_tokens
        s.b_output_tokens += used.output_tokens
        s.b_runs += 1
        if cost is not None:
            s.b_cost += cost
            s.b_priced += 1

    async def _plain(
        self, real: dict[str, Any], config: RunnableConfig, opts: RunOptions
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        n = len(opts.hops)
        ub = await self.run(self.b, real, config)
        self._count_b(opts.hops[n:], (time.perf_counter() - t0) * 1000.0)
        return ub

    async def _commit(
        self,
        hit: _Branch,
        real: dict[str, Any],
        config: RunnableConfig,
        opts: RunOptions,
        a_done: float,
        tally: _Tally,
    ) -> dict[str, Any]:
        try:
            ub = await hit.task
        except asyncio.CancelledError:
            raise
        except Exception:
            tally.outcome = "hit_rerun"  # the guessed request failed: its tokens are waste
            self._waste([hit], time.perf_counter(), tally)
            return await self._plain(real, config, opts)
        b_done = time.perf_counter()
        self._count_b(hit.opts.hops, (b_done - hit.started) * 1000.0)
        tally.outcome = "hit"
        tally.saved_ms = max(0.0, min(a_done, b_done) - hit.started) * 1000.0
        opts.hops.extend(hit.opts.hops)
        if opts.stream:
            from langgraph.config import get_stream_writer

            text = ub.get(self.b.output_key)
            if isinstance(text, str) and text and self.b.kind == "llm":
                get_stream_writer()(TokenEvent(self.b.name, text))
        return ub
