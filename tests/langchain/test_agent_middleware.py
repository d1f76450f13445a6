"""FlowoptMiddleware in real ``create_agent`` agents on the real Qwen server (vLLM, hermes
tool parser), through LangChain's ChatOpenAI and the official openai client.

Kept short: every model turn costs seconds on 2 CPU cores. The 0.5B model is driven
through the two tools by ``ToolPlan`` (tests/langchain/agent_kit.py); the model still
writes the calls' arguments and the answer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
from tests.langchain.agent_kit import (
    QUESTION,
    SYSTEM,
    ModelCalls,
    ToolPlan,
    cache_decision,
    calculator,
    faq,
    qwen,
    span_recorder,
    spans,
)

from flowopt.gateway._background import free_port
from flowopt.langchain import FlowoptMiddleware
from flowopt.tracing import GenAI

pytestmark = pytest.mark.integration

MEMORY: dict[str, Any] = {"store": "memory", "semantic": False}
RESILIENCE = {"resilience": {"retry": {"attempts": 2, "backoff": {"base": 0.05}}}}


def _agent(qwen_url: str, flowopt: FlowoptMiddleware, tools: list[Any] | None = None) -> Any:
    return create_agent(
        qwen(qwen_url),
        [calculator, faq] if tools is None else tools,
        system_prompt=SYSTEM,
        middleware=[ToolPlan(["calculator", "faq"]), flowopt],
    )


def _check_two_tool_run(messages: list[Any]) -> list[AIMessage]:
    """Both tools ran with the model's arguments and the answer is text; the AI turns."""
    results = {m.name: str(m.content) for m in messages if isinstance(m, ToolMessage)}
    assert results["calculator"] == "391", messages
    assert "14 days" in results["faq"], messages
    turns = [m for m in messages if isinstance(m, AIMessage)]
    assert [c["name"] for t in turns for c in t.tool_calls] == ["calculator", "faq"]
    assert isinstance(turns[-1].content, str) and turns[-1].content.strip()
    assert not turns[-1].tool_calls
    return turns


def test_two_tool_task_sync_pure_tools_cached_and_traced(qwen_url: str) -> None:
    tracing, exporter = span_recorder(capture=True)
    cache = {**MEMORY, "tool_results": "pure", "pure_tools": ["calculator", "faq"]}
    flowopt = FlowoptMiddleware([{"cache": cache}, RESILIENCE], tracing=tracing)
    agent = _agent(qwen_url, flowopt)

    first_calls, second_calls = ModelCalls(), ModelCalls()
    first = agent.invoke({"messages": [("user", QUESTION)]}, {"callbacks": [first_calls]})
    turns = _check_two_tool_run(first["messages"])
    assert [cache_decision(t)["skip_reason"] for t in turns[:2]] == ["tool_call", "tool_call"]
    assert cache_decision(turns[-1])["stored"] is True
    assert first_calls.count == 3

    second = agent.invoke({"messages": [("user", QUESTION)]}, {"callbacks": [second_calls]})
    turns = _check_two_tool_run(second["messages"])
    # the tool-calling turns are asked again (never cached); the answer built on the
    # pure tools' results is a hit, although the server drew new tool call ids
    assert cache_decision(turns[-1])["hit"] is True
    assert turns[-1].content == _check_two_tool_run(first["messages"])[-1].content
    assert second_calls.count == 2

    tool_spans = spans(exporter, "execute_tool")
    assert sorted(s.name for s in tool_spans) == [
        "execute_tool calculator",
        "execute_tool calculator",
        "execute_tool faq",
        "execute_tool faq",
    ]
    attrs = dict(tool_spans[0].attributes or {})
    assert attrs[GenAI.OPERATION] == "execute_tool" and attrs[GenAI.TOOL_CALL_ID]
    chats = spans(exporter, "chat ")
    assert len(chats) == 5  # 3 + 2 model calls, each in its own CLIENT span
    calling = [
        s for s in chats if list((s.attributes or {})[GenAI.RESPONSE_FINISH]) == ["tool_calls"]
    ]  # type: ignore[call-overload]
    assert len(calling) == 4
    (out,) = json.loads(str((calling[0].attributes or {})[GenAI.OUTPUT_MESSAGES]))
    assert out["parts"][0]["type"] == "tool_call" and out["parts"][0]["name"] == "calculator"


async def test_two_tool_task_async_tool_results_not_cached_by_default(qwen_url: str) -> None:
    flowopt = FlowoptMiddleware([{"cache": MEMORY}, RESILIENCE])
    out = await _agent(qwen_url, flowopt).ainvoke({"messages": [("user", QUESTION)]})
    turns = _check_two_tool_run(out["messages"])
    final = cache_decision(turns[-1])
    assert (final["action"], final["skip_reason"]) == ("bypass", "tools")
    await flowopt.aclose()


def test_first_turn_is_a_hit_streamed_as_one_message_and_other_tools_miss(qwen_url: str) -> None:
    flowopt = FlowoptMiddleware([{"cache": MEMORY}, RESILIENCE])
    question = {"messages": [("user", "What is the capital of France? Answer in one word.")]}

    def agent(tools: list[Any]) -> Any:
        return create_agent(qwen(qwen_url), tools, middleware=[flowopt])

    live = list(agent([calculator, faq]).stream(question, stream_mode="messages"))
    chunks = [m for m, _ in live if isinstance(m, AIMessageChunk)]
    assert len(chunks) > 1  # a miss streams from the model, token by token
    text = "".join(str(c.content) for c in chunks)
    assert "Paris" in text

    calls = ModelCalls()
    replay = list(
        agent([calculator, faq]).stream(question, {"callbacks": [calls]}, stream_mode="messages")
    )
    ai = [m for m, _ in replay if isinstance(m, AIMessage)]
    # a hit: no model call, and the answer arrives as one whole message
    assert calls.count == 0
    assert len(ai) == 1 and not isinstance(ai[0], AIMessageChunk)
    assert ai[0].content == text and cache_decision(ai[0])["hit"] is True

    other = agent([calculator]).invoke(question, {"callbacks": [calls]})
    assert calls.count == 1  # same question, another tool list: the model is asked
    assert cache_decision(other["messages"][-1])["hit"] is False


def test_fallback_tier_is_called_through_the_agents_handler(qwen_url: str) -> None:
    dead = qwen(f"http://127.0.0.1:{free_port()}")  # nothing listens: connection refused
    flowopt = FlowoptMiddleware(
        [
            {
                "resilience": {
                    "retry": {"attempts": 2, "backoff": {"base": 0.05}},
                    "fallback": ["backup"],
                }
            }
        ],
        models={"backup": qwen(qwen_url)},
    )
    agent = create_agent(dead, [calculator, faq], middleware=[flowopt])
    out = agent.invoke({"messages": [("user", "What is the capital of France? One word.")]})
    final = out["messages"][-1]
    assert "Paris" in str(final.content)
    fell = next(
        d for d in final.response_metadata["flowopt"]["decisions"] if d["action"] == "fell_back"
    )
    assert fell["served_by"] == "backup"
    assert final.response_metadata["model_name"] == "qwen0.5b"
