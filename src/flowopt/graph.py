"""The one module that maps a pipeline spec onto LangGraph.

Each step becomes a node of a real ``StateGraph``; edges and routes become LangGraph edges
and conditional edges. The state is a ``TypedDict`` with the pipeline's input keys
(``input``, ``messages`` for a chat input, ``user``, ``tenant``), one key per step output,
and ``_trail`` (the steps that ran, in order). The compiled graph is returned as is, so
users keep checkpointers, ``stream_mode``s and ``get_graph()`` drawing.

The nodes themselves do not know about HTTP or middleware: each calls back into the
pipeline's step runner (the ``NodeFn`` given to :func:`build_graph`), which owns the
middleware stack.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from flowopt.errors import ConfigError
from flowopt.spec import PipelineSpec, RouteSpec, StepSpec

__all__ = ["build_graph", "close_graph", "state_schema"]

NodeFn = Callable[[StepSpec, dict[str, Any], RunnableConfig], Awaitable[dict[str, Any]]]


def state_schema(spec: PipelineSpec) -> type:
    """A TypedDict for the run state: inputs (``messages`` for a chat), step outputs, and
    the hop log."""
    fields: dict[str, Any] = {"input": Any, "messages": Any, "user": Any, "tenant": Any}
    for s in spec.steps:
        fields[s.output_key] = Any
    fields["_trail"] = Annotated[list, operator.add]
    return TypedDict(f"{spec.name.title().replace('-', '')}State", fields, total=False)  # type: ignore[operator, no-any-return]


def _node(step: StepSpec, run: NodeFn) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def node(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        return await run(step, state, config)

    node.__name__ = f"step_{step.name}"
    return node


def _router(route: RouteSpec) -> Callable[[dict[str, Any]], str]:
    def pick(state: dict[str, Any]) -> str:
        target = route.pick(state.get(route.key, ""))
        return END if target == "END" else target

    return pick


def build_graph(
    spec: PipelineSpec,
    run: NodeFn,
    *,
    checkpointer: Any = None,
    pipeline: Any = None,
) -> Any:
    """Compile ``spec`` to a LangGraph graph whose nodes call ``run(step, state, config)``.

    A speculated edge A -> B (``spec.speculate``) becomes one node named A that runs
    both (:mod:`flowopt.speculate._node`): only verified results reach the state. Its
    speculators (with their running figures) are on the compiled graph as
    ``flowopt_speculators``. ``pipeline`` (the owner) gives them its middleware (is a
    load shedder active?), its backends (is B's engine queueing?) and its tracer.
    """
    graph: StateGraph[Any] = StateGraph(state_schema(spec))
    fused = {e.target: e.source for e in spec.speculate}
    speculators: dict[str, Any] = {}
    if spec.speculate:
        from flowopt.speculate import make_speculators

        layers = pipeline.middleware if pipeline is not None else []
        tracer = pipeline.tracing.tracer if pipeline is not None else None
        backends = pipeline.backends if pipeline is not None else {}
        speculators = make_speculators(spec, run, layers, tracer, backends)
    for step in spec.steps:
        if step.name in fused:
            continue
        node = speculators.get(step.name) or _node(step, run)
        graph.add_node(step.name, node)  # type: ignore[call-overload]

    def at(n: str) -> str:
        return fused.get(n, n)

    names = [s.name for s in spec.steps]
    routed = {at(r.source) for r in spec.routes}
    has_out: set[str] = set()
    if spec.edges is None:
        graph.add_edge(START, names[0])
        if not spec.routes:
            for a, b in itertools.pairwise(names):
                if at(a) != at(b):
                    graph.add_edge(at(a), at(b))
                    has_out.add(at(a))
    else:
        starts = [b for a, b in spec.edges if a == "START"]
        if not starts:
            graph.add_edge(START, names[0])
        for a, b in spec.edges:
            if at(a) == at(b):
                continue
            graph.add_edge(START if a == "START" else at(a), END if b == "END" else b)
            has_out.add(at(a))
    for route in spec.routes:
        path_map: dict[str, str] = {t: (END if t == "END" else t) for t in route.cases.values()}
        if route.default and route.default != "END":
            path_map[route.default] = route.default
        path_map[END] = END
        graph.add_conditional_edges(at(route.source), _router(route), path_map)  # type: ignore[arg-type]
    for n in names:
        if n not in fused and n not in has_out and n not in routed:
            graph.add_edge(n, END)
    _check_reachable(spec)
    compiled = graph.compile(checkpointer=checkpointer)
    compiled.flowopt_speculators = speculators  # type: ignore[attr-defined]
    return compiled


async def close_graph(graph: Any) -> None:
    """Stop what a built graph runs in the background: each speculated edge's queue
    poller (it would otherwise read the engine's ``/metrics`` for another 30 s)."""
    for speculator in getattr(graph, "flowopt_speculators", {}).values():
        if speculator.gate.queue is not None:
            await speculator.gate.queue.aclose()


def _check_reachable(spec: PipelineSpec) -> None:
    names = [s.name for s in spec.steps]
    nxt: dict[str, set[str]] = {n: set() for n in [*names, "START"]}
    if spec.edges is None:
        nxt["START"].add(names[0])
        if not spec.routes:
            for a, b in itertools.pairwise(names):
                nxt[a].add(b)
    else:
        if not any(a == "START" for a, _ in spec.edges):
            nxt["START"].add(names[0])
        for a, b in spec.edges:
            nxt.setdefault(a, set()).add(b)
    for r in spec.routes:
        nxt[r.source].update(r.cases.values())
        if r.default:
            nxt[r.source].add(r.default)
    seen: set[str] = set()
    todo = ["START"]
    while todo:
        cur = todo.pop()
        for n in nxt.get(cur, ()):
            if n not in seen and n != "END":
                seen.add(n)
                todo.append(n)
    unreachable = [n for n in names if n not in seen]
    if unreachable:
        raise ConfigError(
            f"pipeline {spec.name!r}: steps {unreachable} can never run",
            hint="connect them with 'edges' or 'routes' (with routes, give edges explicitly)",
        )
