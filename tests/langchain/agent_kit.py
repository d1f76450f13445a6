"""What the agent tests share: two real tools, a tool plan for the 0.5B model, a model-call
counter (a real LangChain callback handler) and an in-memory span exporter."""

from __future__ import annotations

import ast
import operator
from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flowopt.tracing import PipelineTracing

QWEN = "qwen0.5b"
QUESTION = "What is 17 * 23, and how long do refunds take?"
SYSTEM = "You are a support assistant. Use the calculator for arithmetic, the faq for policies."
FINAL = "Using those tool results, answer both parts of my question in one sentence."

_OPS: dict[type[ast.AST], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError("unsupported expression")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '12 * (3 + 4)'."""
    try:
        value = _evaluate(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        return f"error: {exc}"
    return str(int(value) if float(value).is_integer() else value)


FAQ = {"refund": "Refunds are issued within 14 days of a return."}


@tool
def faq(topic: str) -> str:
    """Look up the support FAQ by topic, e.g. 'refund'."""
    return FAQ.get(topic.strip().lower().rstrip("s"), f"No FAQ entry for {topic!r}.")


class ToolPlan(AgentMiddleware):  # type: ignore[type-arg]
    """The tools in a fixed order (a named ``tool_choice`` per turn, which vLLM enforces),
    then the answer without tools: the 0.5B model does not pick tools reliably itself."""

    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.order = order

    def _plan(self, request: ModelRequest[Any]) -> ModelRequest[Any]:
        called = {
            c["name"] for m in request.messages if isinstance(m, AIMessage) for c in m.tool_calls
        }
        todo = next((n for n in self.order if n not in called), None)
        if todo is not None:
            return request.override(tool_choice=todo)
        messages: list[Any] = [*request.messages, HumanMessage(FINAL)]
        return request.override(tools=[], tool_choice=None, messages=messages)

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse]
    ) -> ModelResponse:
        return handler(self._plan(request))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        return await handler(self._plan(request))


class ModelCalls(BaseCallbackHandler):
    """Counts chat model runs: how many times LangChain really called a model."""

    def __init__(self) -> None:
        self.count = 0

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.count += 1


def qwen(base_url: str, **kw: Any) -> ChatOpenAI:
    """The real model, greedy and short, without client retries (flowopt's decide)."""
    opts: dict[str, Any] = {"temperature": 0, "max_tokens": 48, "max_retries": 0, **kw}
    return ChatOpenAI(model=QWEN, base_url=base_url + "/v1", api_key="none", **opts)  # type: ignore[arg-type]


def span_recorder(capture: bool = True) -> tuple[PipelineTracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return PipelineTracing(provider.get_tracer("test"), capture_content=capture), exporter


def spans(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def decisions(message: Any) -> list[tuple[str, str]]:
    """``(middleware, action)`` of an AI message's flowopt decisions."""
    block = message.response_metadata.get("flowopt") or {}
    return [(d["middleware"], d["action"]) for d in block.get("decisions", [])]


def cache_decision(message: Any) -> dict[str, Any]:
    block = message.response_metadata.get("flowopt") or {}
    return next(d for d in block.get("decisions", []) if d["middleware"] == "cache")
