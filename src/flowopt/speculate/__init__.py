"""Workflow-level speculative execution: start step B on a guess of step A's output,
keep B's result only when the guess equals A's real output (docs/speculation.md).

Declared per edge in the spec (:class:`~flowopt.SpeculateSpec`); the graph module fuses
A and B into one node (:mod:`flowopt.speculate._node`) so only verified results reach the
state and any checkpointer. Guessers are plugins (:mod:`flowopt.speculate.guessers`);
:mod:`flowopt.speculate.gate` decides when guessing pays; :func:`speculation_stats` gives
each edge's running figures (hit rate, T1, T2, saved and wasted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import trace

from flowopt import registry
from flowopt._speculate_spec import SpeculateSpec
from flowopt.errors import ConfigError
from flowopt.speculate._node import NodeFn, Speculator
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
    "speculation_stats",
]


def make_speculators(
    spec: Any, run: NodeFn, layers: Sequence[tuple[str, Any]], tracer: Any
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
            Gate(edge, layers),
            tracer or trace.get_tracer("flowopt.speculate"),
        )
    return out


def speculation_stats(pipeline: Any) -> dict[str, EdgeStats]:
    """Running figures of each speculated edge of ``pipeline``, keyed ``"A->B"``."""
    speculators: dict[str, Speculator] = getattr(pipeline.graph, "flowopt_speculators", {})
    return {s.edge.edge: s.stats for s in speculators.values()}
