"""A LangChain agent with two tools, optimized by flowopt three ways.

    flowopt backend up --model qwen0.5b     # Qwen2.5-Coder-0.5B with tool calling, :8001
    python examples/agent_tools.py

The agent (``create_agent``) answers "What is 17 * 23, and how long do refunds take?" with
a safe calculator (parsed with ``ast``, never ``eval``) and an FAQ lookup. It runs twice in
each variant, so the second run shows what flowopt's cache answers:

- ``run_with_middleware``: ``ChatOpenAI`` straight at the vLLM server, with
  ``FlowoptMiddleware`` (cache + resilience) in the agent: the model stays LangChain's.
- ``run_with_chatflowopt``: the agent's model is ``ChatFlowopt``: flowopt's stack runs
  in-process over flowopt's own vLLM backend (no ChatOpenAI, no gateway).
- ``run_through_gateway``: the same agent whose ``ChatOpenAI`` points at a flowopt gateway
  (``flowopt serve``, started here as a subprocess over a one-step spec): no flowopt code
  in the agent at all.

The server is ``FLOWOPT_STRONG_URL`` (default http://127.0.0.1:8001) serving
``FLOWOPT_STRONG_MODEL`` (default qwen0.5b). A 0.5B model does not choose tools reliably
on its own, so ``ToolPlan`` (a plain LangChain middleware) names the next tool for each
turn (vLLM then guarantees a well-formed call) and asks for the answer once both tools
have run; with a larger model, drop it.
"""

from __future__ import annotations

import ast
import operator
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from flowopt.langchain import ChatFlowopt, FlowoptMiddleware

QWEN_URL = os.environ.get("FLOWOPT_STRONG_URL", "http://127.0.0.1:8001").rstrip("/")
QWEN_MODEL = os.environ.get("FLOWOPT_STRONG_MODEL", "qwen0.5b")
QUESTION = "What is 17 * 23, and how long do refunds take?"
SYSTEM = "You are a support assistant. Use the calculator for arithmetic, the faq for policies."
FINAL = "Using those tool results, answer both parts of my question in one sentence."

# -- the tools -----------------------------------------------------------------------------
_OPS: dict[type[ast.AST], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}


def _evaluate(node: ast.AST) -> float:
    """Numbers, + - * / % ** and parentheses; anything else is refused."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value  # type: ignore[no-any-return]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return _OPS[type(node.op)](left, right)  # type: ignore[no-any-return]
    raise ValueError(f"unsupported expression: {ast.dump(node)[:60]}")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '12 * (3 + 4)'."""
    try:
        result = _evaluate(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        return f"error: {exc}"
    return str(int(result) if float(result).is_integer() else result)


FAQ = {
    "refund": "Refunds are issued within 14 days of a return.",
    "shipping": "Standard shipping takes 3 to 5 business days.",
    "warranty": "Every device has a two-year warranty.",
}


@tool
def faq(topic: str) -> str:
    """Look up the support FAQ by topic: 'refund', 'shipping' or 'warranty'."""
    key = topic.strip().lower().rstrip("s")
    return FAQ.get(key, f"No FAQ entry for {topic!r}; topics: {', '.join(FAQ)}.")


# -- a small model's tool plan ---------------------------------------------------------------
class ToolPlan(AgentMiddleware):  # type: ignore[type-arg]
    """Asks for the tools in a fixed order (a named ``tool_choice`` per turn), then for
    the answer without tools. Only the model call is changed, never the agent's state."""

    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.order = order

    def _plan(self, request: ModelRequest[Any]) -> ModelRequest[Any]:
        called = {
            c["name"] for m in request.messages if isinstance(m, AIMessage) for c in m.tool_calls
        }
        todo = next((name for name in self.order if name not in called), None)
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


def chat_model(base_url: str) -> ChatOpenAI:
    # Greedy (a sampled answer is never cached), short, and no client-side retries: the
    # resilience layer decides those.
    return ChatOpenAI(
        model=QWEN_MODEL,
        base_url=base_url + "/v1",
        api_key="none",  # type: ignore[arg-type]
        temperature=0,
        max_tokens=48,  # type: ignore[call-arg]
        max_retries=0,
    )


def show(label: str, messages: list[BaseMessage]) -> None:
    print(f"-- {label}")
    for m in messages[1:]:
        if isinstance(m, AIMessage) and m.tool_calls:
            what = ", ".join(f"{c['name']}({c['args']})" for c in m.tool_calls)
        else:
            what = repr(m.content)
        line = f"   {type(m).__name__:<11} {what}"
        flowopt = m.response_metadata.get("flowopt") if isinstance(m, AIMessage) else None
        if flowopt:
            line += (
                "  ["
                + ", ".join(
                    f"{d['middleware']}:{d['action']}"
                    + (f"({d['skip_reason']})" if d.get("skip_reason") else "")
                    for d in flowopt["decisions"]
                )
                + "]"
            )
        elif isinstance(m, AIMessage) and m.usage_metadata is not None:
            line += f"  [{m.usage_metadata['output_tokens']} tokens generated]"
        print(line)


# -- the two variants ------------------------------------------------------------------------
def run_with_middleware() -> None:
    """FlowoptMiddleware in the agent: each model call runs through flowopt's cache and
    resilience; LangChain's ChatOpenAI still makes the call."""
    flowopt = FlowoptMiddleware(
        [
            # The tools are pure (same arguments, same result): answers built on their
            # results may be cached too. Exact tier only, so no embedding model loads.
            {
                "cache": {
                    "store": "memory",
                    "semantic": False,
                    "tool_results": "pure",
                    "pure_tools": ["calculator", "faq"],
                }
            },
            {"resilience": {"retry": {"attempts": 3, "backoff": {"base": 0.2}}}},
        ]
    )
    agent = create_agent(
        chat_model(QWEN_URL),
        [calculator, faq],
        system_prompt=SYSTEM,
        middleware=[ToolPlan(["calculator", "faq"]), flowopt],
    )
    for run in ("first run", "second run"):
        out = agent.invoke({"messages": [("user", QUESTION)]})
        show(f"middleware, {run}", out["messages"])
    flowopt.close()


def run_with_chatflowopt() -> None:
    """ChatFlowopt as the agent's model: the same cache and resilience, run by flowopt's
    own backend in this process."""
    model = ChatFlowopt(
        backend={"vllm": {"base_url": QWEN_URL, "model": QWEN_MODEL}},
        middleware=[
            {
                "cache": {
                    "store": "memory",
                    "semantic": False,
                    "tool_results": "pure",
                    "pure_tools": ["calculator", "faq"],
                }
            },
            {"resilience": {"retry": 3}},
        ],
        temperature=0,
        max_tokens=48,
    )
    agent = create_agent(
        model, [calculator, faq], system_prompt=SYSTEM, middleware=[ToolPlan(["calculator", "faq"])]
    )
    for run in ("first run", "second run"):
        out = agent.invoke({"messages": [("user", QUESTION)]})
        show(f"ChatFlowopt, {run}", out["messages"])


SPEC = """\
name: agent-gateway
backend:
  vllm: {{base_url: "{url}", model: "{model}"}}
middleware:
  - cache: {{store: memory, semantic: false, tool_results: pure,
             pure_tools: [calculator, faq]}}
  - resilience: {{retry: 3}}
steps:
  - {{name: answer, prompt: "{{input}}"}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(spec: Path, port: int) -> subprocess.Popen[str]:
    """``flowopt serve`` in a subprocess; returns once uvicorn says it is serving (its
    start-up line), or raises with the server's output."""
    cmd = [sys.executable, "-m", "flowopt.cli", "serve", str(spec), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "info"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    watchdog = threading.Timer(120, proc.kill)  # a server that never starts is killed
    watchdog.start()
    seen: list[str] = []
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            seen.append(line)
            if "Application startup complete" in line:
                # keep draining its log so the pipe never fills up
                threading.Thread(target=proc.stderr.read, daemon=True).start()
                return proc
    finally:
        watchdog.cancel()
    proc.wait()
    raise RuntimeError("the gateway did not start:\n" + "".join(seen[-20:]))


def run_through_gateway() -> None:
    """The same agent, no flowopt code: its ChatOpenAI talks to a flowopt gateway, whose
    pipeline caches and retries. A gateway cache hit reports zero generated tokens."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "agent.yaml"
        spec.write_text(SPEC.format(url=QWEN_URL, model=QWEN_MODEL))
        proc = start_gateway(spec, port)
        try:
            agent = create_agent(
                chat_model(f"http://127.0.0.1:{port}"),
                [calculator, faq],
                system_prompt=SYSTEM,
                middleware=[ToolPlan(["calculator", "faq"])],
            )
            for run in ("first run", "second run"):
                out = agent.invoke({"messages": [("user", QUESTION)]})
                show(f"gateway, {run}", out["messages"])
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> int:
    assert calculator.invoke({"expression": "2 * (3 + 4) - 1"}) == "13"
    assert calculator.invoke({"expression": "__import__('os')"}).startswith("error")
    run_with_middleware()
    run_with_chatflowopt()
    run_through_gateway()
    return 0


if __name__ == "__main__":
    sys.exit(main())
