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

__all__ = ["build_graph", "state_schema"]

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


def build_graph(spec: PipelineSpec, run: NodeFn, *, checkpointer: Any = None) -> Any:
    """Compile ``spec`` to a LangGraph graph whose nodes call ``run(step, state, config)``."""
    graph: StateGraph[Any] = StateGraph(state_schema(spec))
    for step in spec.steps:
        graph.add_node(step.name, _node(step, run))  # type: ignore[call-overload]

    names = [s.name for s in spec.steps]
    routed = {r.source for r in spec.routes}
    has_out: set[str] = set()
    if spec.edges is None:
        graph.add_edge(START, names[0])
        if not spec.routes:
            for a, b in itertools.pairwise(names):
                graph.add_edge(a, b)
                has_out.add(a)
    else:
        starts = [b for a, b in spec.edges if a == "START"]
        if not starts:
            graph.add_edge(START, names[0])
        for a, b in spec.edges:
            graph.add_edge(START if a == "START" else a, END if b == "END" else b)
            has_out.add(a)
    for route in spec.routes:
        path_map: dict[str, str] = {t: (END if t == "END" else t) for t in route.cases.values()}
        if route.default and route.default != "END":
            path_map[route.default] = route.default
        path_map[END] = END
        graph.add_conditional_edges(route.source, _router(route), path_map)  # type: ignore[arg-type]
    for n in names:
        if n not in has_out and n not in routed:
            graph.add_edge(n, END)
    _check_reachable(spec)
    return graph.compile(checkpointer=checkpointer)


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
