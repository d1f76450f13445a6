"""Workflow-level speculative execution: start step B on a guess of step A's output,
keep B's result only when the guess equals A's real output (docs/speculation.md).

Declared per edge in the spec (:class:`~flowopt.SpeculateSpec`); the graph module fuses
A and B into one node (:mod:`flowopt.speculate._node`) so only verified results reach the
state and any checkpointer. Guessers are plugins (:mod:`flowopt.speculate.guessers`);
:mod:`flowopt.speculate.gate` decides when guessing pays; :func:`speculation_stats` gives
each edge's running figures (hit rate, T1, T2, saved and wasted); :func:`observe` hands
every run's :class:`~flowopt.result.Speculation` record to a callback (the gateway's
Prometheus counters use it, so speculation itself needs no metrics library).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace

from flowopt import registry
from flowopt._speculate_spec import SpeculateSpec
from flowopt.errors import ConfigError
from flowopt.speculate._node import NodeFn, Observer, Speculator
from flowopt.speculate._queue import QueueProbe
from flowopt.speculate.gate import EdgeStats, Gate
from flowopt.speculate.guessers import Guess, Guesser, LookupGuesser, TfidfGuesser

__all__ = [
    "EdgeStats",
    "Gate",
    "Guess",
    "Guesser",
    "LookupGuesser",
    "SpeculateSpec",
    "Speculator",
    "TfidfGuesser",
    "make_speculators",
    "observe",
    "speculation_stats",
]


def _queue_probe(spec: Any, edge: SpeculateSpec, backends: Mapping[str, Any]) -> QueueProbe | None:
    """A probe of the queue of B's backend (its own, else the default), when that
    backend can report one (``queue_depth()``: the vLLM backend) and the edge reads it."""
    if edge.max_queued is None:
        return None
    b = next(s for s in spec.steps if s.name == edge.target)
    backend = backends.get(getattr(b, "backend", None) or "default")
    read = getattr(backend, "queue_depth", None)
    return QueueProbe(read) if callable(read) else None


def make_speculators(
    spec: Any,
    run: NodeFn,
    layers: Sequence[tuple[str, Any]],
    tracer: Any,
    backends: Mapping[str, Any] | None = None,
) -> dict[str, Speculator]:
    """One fused-node runner per speculated edge, keyed by A's name (the node's name)."""
    out: dict[str, Speculator] = {}
    for i, edge in enumerate(spec.speculate):
        where = f"speculate[{i}] ({edge.edge}) guesser {edge.guesser.name}"
        guesser = registry.instantiate(edge.guesser, "guesser", where)
        if not isinstance(guesser, Guesser):
            raise ConfigError(
                f"{where}: {guesser!r} is not a guesser (no guess()/observe())",
                hint="a guesser implements flowopt.speculate.Guesser",
            )
        out[edge.source] = Speculator(
            edge,
            spec,
            run,
            guesser,
            Gate(edge, layers, _queue_probe(spec, edge, backends or {})),
            tracer or trace.get_tracer("flowopt.speculate"),
        )
    return out


def observe(pipeline: Any, observer: Observer) -> Callable[[], None]:
    """Call ``observer(pipeline_name, record)`` after every run of every speculated edge
    of ``pipeline``; returns the function that stops it. An observer must be quick and
    must not raise (an exception is logged, never surfaced to the run)."""
    speculators: dict[str, Speculator] = getattr(pipeline.graph, "flowopt_speculators", {})
    for s in speculators.values():
        s.observers.append(observer)

    def stop() -> None:
        for s in speculators.values():
            with contextlib.suppress(ValueError):
                s.observers.remove(observer)

    return stop


def speculation_stats(pipeline: Any) -> dict[str, EdgeStats]:
    """Running figures of each speculated edge of ``pipeline``, keyed ``"A->B"``."""
    speculators: dict[str, Speculator] = getattr(pipeline.graph, "flowopt_speculators", {})
    return {s.edge.edge: s.stats for s in speculators.values()}
