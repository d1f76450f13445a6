"""flowopt inside your own LangGraph graph: a StateGraph node calls ``ChatFlowopt``.

    flowopt backend up                 # SmolLM2 on :8000
    python examples/langgraph_node.py

Your graph stays yours (state, edges, checkpointer); only the chat model in its nodes is
flowopt's, so each model call runs through flowopt's cache and resilience in-process. The
graph runs twice on the same question: the second run's model call is an exact cache hit
(``response_metadata["flowopt"]["decisions"]``).

Traces: LangGraph itself emits no OpenTelemetry spans. Give each node a span (here a small
``traced`` decorator; an instrumentation such as OpenInference's LangChain instrumentor does
the same) and flowopt's spans nest under it, because ``ChatFlowopt`` runs its stack in the
caller's OpenTelemetry context. The script prints the span tree it recorded.

The server is ``FLOWOPT_BASE_URL`` (default http://127.0.0.1:8000) serving
``FLOWOPT_MODEL`` (default smollm2).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypedDict

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flowopt.langchain import ChatFlowopt

BASE_URL = os.environ.get("FLOWOPT_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
MODEL = os.environ.get("FLOWOPT_MODEL", "smollm2")

# The app's own tracing: a global provider (here in memory, to print the tree at the end).
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("my-app")

llm = ChatFlowopt(
    backend={"vllm": {"base_url": BASE_URL, "model": MODEL}},
    middleware=[
        {"cache": {"store": "memory", "semantic": False}},  # exact tier: no embedder loads
        {"resilience": {"retry": 2}},
    ],
    temperature=0,
    max_tokens=24,
)


class State(TypedDict):
    question: str
    topic: str
    answer: str


def traced(name: str) -> Callable[[Callable[[State], dict[str, Any]]], Any]:
    """Run a node inside a span of its own (what a LangGraph instrumentation would do)."""

    def wrap(fn: Callable[[State], dict[str, Any]]) -> Callable[[State], dict[str, Any]]:
        @functools.wraps(fn)
        def node(state: State) -> dict[str, Any]:
            with tracer.start_as_current_span(f"node {name}"):
                return fn(state)

        return node

    return wrap


@traced("topic")
def topic(state: State) -> dict[str, Any]:
    reply = llm.invoke([HumanMessage(f"One word for the topic of: {state['question']}")])
    return {"topic": str(reply.content).strip()}


@traced("answer")
def answer(state: State) -> dict[str, Any]:
    reply = llm.invoke([HumanMessage(f"Answer briefly: {state['question']}")])
    assert isinstance(reply, AIMessage)
    decisions = reply.response_metadata["flowopt"]["decisions"]
    cache = next(d for d in decisions if d["middleware"] == "cache")
    print(f"   answer: cache {cache['action']}")
    return {"answer": str(reply.content)}


def build() -> Any:
    graph = StateGraph(State)
    graph.add_node("topic", topic)
    graph.add_node("answer", answer)
    graph.add_edge(START, "topic")
    graph.add_edge("topic", "answer")
    graph.add_edge("answer", END)
    return graph.compile()


def print_tree(spans: list[ReadableSpan]) -> None:
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    ids = {s.context.span_id for s in spans}
    for s in spans:
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(s)

    def show(parent: int | None, depth: int) -> None:
        for s in sorted(by_parent.get(parent, []), key=lambda s: s.start_time or 0):
            print("   " + "  " * depth + s.name)
            show(s.context.span_id, depth + 1)

    show(None, 0)


def main() -> int:
    app = build()
    question = "What is the capital of France?"
    for run in ("first run", "second run"):
        print(f"-- {run}")
        with tracer.start_as_current_span(f"graph ({run})"):
            out = app.invoke({"question": question, "topic": "", "answer": ""})
        print(f"   topic={out['topic']!r} answer={out['answer']!r}")
    spans = list(exporter.get_finished_spans())
    print("-- spans")
    print_tree(spans)
    # every flowopt span sits under the node that made the call
    by_id = {s.context.span_id: s for s in spans}

    def node_of(span: ReadableSpan) -> str | None:
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            if span.name.startswith("node "):
                return span.name
        return None

    flowopt_spans = [s for s in spans if s.name.startswith(("chat ", "middleware "))]
    assert flowopt_spans and all(node_of(s) for s in flowopt_spans), "spans not nested"
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
