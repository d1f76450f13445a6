"""FlowoptMiddleware's translation and tier logic, with a fake handler (no server).

The handler is LangChain's ``handler(request)`` stand-in: ``FakeHandler`` records every
``ModelRequest`` it gets and answers from a script, so these tests see exactly which
model was asked, with which messages, how often. The integration tests
(test_agent_middleware.py) run the same paths against the real model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from langchain.agents.middleware import ModelRequest, ModelResponse
from langchain.agents.structured_output import ProviderStrategy
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI
from langgraph.prebuilt.tool_node import ToolCallRequest
from pydantic import BaseModel
from tests.langchain.agent_kit import calculator, faq, span_recorder, spans

from flowopt.errors import ConfigError
from flowopt.langchain import FlowoptMiddleware
from flowopt.langchain._agent_translate import to_request
from flowopt.middleware.base import CallNext, MiddlewareBase
from flowopt.tracing import GenAI
from flowopt.types import Message, Request, Response

AGENT_MODEL = ChatOpenAI(
    model="agent-model",
    base_url="http://127.0.0.1:9/v1",  # never contacted: the fake handler answers
    api_key="none",  # type: ignore[arg-type]
    temperature=0,
    max_tokens=32,  # type: ignore[call-arg]
)
BACKUP_MODEL = AGENT_MODEL.model_copy(update={"model_name": "backup-model"})
MEMORY = {"cache": {"store": "memory", "semantic": False}}


def answer(text: str = "Paris.", **kw: Any) -> AIMessage:
    meta = {"finish_reason": "tool_calls" if kw.get("tool_calls") else "stop"}
    usage = {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12}
    return AIMessage(text, response_metadata=meta, usage_metadata=usage, **kw)  # type: ignore[arg-type]


class FakeHandler:
    """Stands in for LangChain's handler: records requests, answers with ``reply``."""

    def __init__(self, reply: Callable[[ModelRequest[Any]], AIMessage] | AIMessage) -> None:
        self.reply = reply
        self.requests: list[ModelRequest[Any]] = []

    def __call__(self, request: ModelRequest[Any]) -> ModelResponse[Any]:
        self.requests.append(request)
        msg = self.reply(request) if callable(self.reply) else self.reply
        return ModelResponse(result=[msg])

    async def acall(self, request: ModelRequest[Any]) -> ModelResponse[Any]:
        return self(request)


def model_request(
    messages: list[Any] | None = None, tools: list[Any] | None = None, **kw: Any
) -> ModelRequest[Any]:
    return ModelRequest(
        model=kw.pop("model", AGENT_MODEL),
        messages=messages or [HumanMessage("What is the capital of France?")],
        system_message=SystemMessage("Answer briefly."),
        tools=[calculator, faq] if tools is None else tools,
        **kw,
    )


def tool_turns(call_id: str) -> list[Any]:
    return [
        HumanMessage("What is 17 * 23?"),
        AIMessage(
            "", tool_calls=[{"name": "calculator", "args": {"expression": "17*23"}, "id": call_id}]
        ),
        ToolMessage("391", tool_call_id=call_id),
    ]


def test_the_request_holds_what_changes_the_answer() -> None:
    req = to_request(
        model_request(tool_choice="calculator", model_settings={"top_p": 0.5, "logit_bias": {}}),
        tenant="acme",
        user=None,
    )
    assert [m.role for m in req.messages] == ["system", "user"]
    assert [t["function"]["name"] for t in req.tools] == ["calculator", "faq"]
    assert dict(req.tool_choice) == {"type": "function", "function": {"name": "calculator"}}  # type: ignore[arg-type]
    p = req.params
    assert (p.temperature, p.max_tokens, p.top_p) == (0.0, 32, 0.5)
    assert "logit_bias" in p.extra  # a setting without a field is still part of the key
    assert "agent-model|http://127.0.0.1:9/v1" in p.extra["langchain.model"]
    assert req.model == "agent-model" and req.tenant == "acme"
    assert to_request(model_request(tool_choice="any"), tenant=None, user=None).tool_choice == (
        "required"
    )


def test_a_repeat_is_served_without_the_handler_and_other_tools_miss() -> None:
    mw = FlowoptMiddleware([MEMORY])
    handler = FakeHandler(answer())
    first = mw.wrap_model_call(model_request(), handler)
    again = mw.wrap_model_call(model_request(), handler)
    assert len(handler.requests) == 1
    (hit,) = again.result
    assert isinstance(hit, AIMessage) and hit.content == "Paris."
    assert hit.response_metadata["flowopt"]["cached"] is True
    assert hit.usage_metadata is not None and hit.usage_metadata["output_tokens"] == 0
    # the miss returned the handler's own message, with the decision added
    assert first.result[0].response_metadata["finish_reason"] == "stop"
    assert first.result[0].response_metadata["flowopt"]["decisions"][0]["stored"] is True
    mw.wrap_model_call(model_request(tools=[calculator]), handler)
    assert len(handler.requests) == 2  # same question, another tool list: a miss


async def test_async_path_serves_the_same_cache() -> None:
    mw = FlowoptMiddleware([MEMORY])
    handler = FakeHandler(answer())
    await mw.awrap_model_call(model_request(), handler.acall)
    res = await mw.awrap_model_call(model_request(), handler.acall)
    assert len(handler.requests) == 1 and res.result[0].response_metadata["flowopt"]["cached"]


def test_tool_calling_answers_are_never_cached() -> None:
    mw = FlowoptMiddleware([MEMORY])
    call = {"name": "calculator", "args": {"expression": "17*23"}, "id": "c1"}
    handler = FakeHandler(answer("", tool_calls=[call]))
    for _ in range(2):
        res = mw.wrap_model_call(model_request(), handler)
    assert len(handler.requests) == 2
    assert res.result[0].tool_calls[0]["name"] == "calculator"


def test_tool_results_are_cached_only_for_pure_tools() -> None:
    handler = FakeHandler(answer("17 * 23 is 391."))
    never = FlowoptMiddleware([MEMORY])
    res = never.wrap_model_call(model_request(tool_turns("a")), handler)
    block = res.result[0].response_metadata["flowopt"]["decisions"][0]
    assert (block["action"], block["skip_reason"]) == ("bypass", "tools")

    pure = {"cache": {**MEMORY["cache"], "tool_results": "pure", "pure_tools": ["calculator"]}}
    mw = FlowoptMiddleware([pure])
    mw.wrap_model_call(model_request(tool_turns("chatcmpl-tool-1")), handler)
    calls = len(handler.requests)
    # the next run of the agent gets fresh tool call ids from the server: still a hit
    res = mw.wrap_model_call(model_request(tool_turns("chatcmpl-tool-2")), handler)
    assert len(handler.requests) == calls
    assert res.result[0].response_metadata["flowopt"]["cached"] is True


def _down_unless_backup(request: ModelRequest[Any]) -> AIMessage:
    if request.model is not BACKUP_MODEL:
        raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:9/v1"))
    return answer("From the backup.")


def test_fallback_calls_the_handler_with_the_tier_model() -> None:
    mw = FlowoptMiddleware(
        [
            {
                "resilience": {
                    "retry": {"attempts": 2, "backoff": {"base": 0.01}},
                    "fallback": ["backup"],
                }
            }
        ],
        models={"backup": BACKUP_MODEL},
    )
    handler = FakeHandler(_down_unless_backup)
    res = mw.wrap_model_call(model_request(), handler)
    assert [r.model for r in handler.requests] == [AGENT_MODEL, AGENT_MODEL, BACKUP_MODEL]
    # the tier call is the agent's request with only the model changed
    assert handler.requests[-1].tools == handler.requests[0].tools
    msg = res.result[0]
    assert msg.content == "From the backup."
    actions = [d["action"] for d in msg.response_metadata["flowopt"]["decisions"]]
    assert "fell_back" in actions


def test_when_every_try_fails_the_caller_gets_the_models_own_error() -> None:
    mw = FlowoptMiddleware([{"resilience": {"retry": {"attempts": 2, "backoff": {"base": 0.01}}}}])
    handler = FakeHandler(_down_unless_backup)
    with pytest.raises(openai.APIConnectionError) as info:
        mw.wrap_model_call(model_request(), handler)
    assert len(handler.requests) == 2
    assert any("flowopt.retry" in note for note in getattr(info.value, "__notes__", []))


def test_an_error_that_is_not_transport_is_not_retried() -> None:
    def broken(request: ModelRequest[Any]) -> AIMessage:
        raise ValueError("bad tool schema")

    mw = FlowoptMiddleware([{"resilience": {"retry": 3}}])
    handler = FakeHandler(broken)
    with pytest.raises(ValueError, match="bad tool schema"):
        mw.wrap_model_call(model_request(), handler)
    assert len(handler.requests) == 1


class Capital(BaseModel):
    city: str


def test_a_cached_structured_answer_is_parsed_again() -> None:
    mw = FlowoptMiddleware([MEMORY])
    handler = FakeHandler(answer('{"city": "Paris"}'))
    rf = ProviderStrategy(schema=Capital)
    mw.wrap_model_call(model_request(response_format=rf), handler)
    res = mw.wrap_model_call(model_request(response_format=rf), handler)
    assert len(handler.requests) == 1
    assert res.structured_response == Capital(city="Paris")


class Redact(MiddlewareBase):
    """A flowopt layer that rewrites the question and caps the answer length."""

    name = "redact"

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        msgs = tuple(
            Message("user", m.text.replace("France", "[country]")) if m.role == "user" else m
            for m in request.messages
        )
        return await call_next(request.replace(messages=msgs).with_params(max_tokens=8))


def test_what_a_flowopt_layer_changes_reaches_the_model_call() -> None:
    mw = FlowoptMiddleware([Redact()])
    handler = FakeHandler(answer())
    mw.wrap_model_call(model_request(), handler)
    (sent,) = handler.requests
    assert sent.system_message is not None and sent.system_message.text == "Answer briefly."
    assert sent.messages[-1].text == "What is the capital of [country]?"
    assert sent.model_settings == {"max_tokens": 8}
    assert sent.tools == [calculator, faq]


def test_default_tier_cannot_be_replaced() -> None:
    with pytest.raises(ConfigError, match="default"):
        FlowoptMiddleware([], models={"default": BACKUP_MODEL})


def test_tool_calls_get_an_execute_tool_span() -> None:
    tracing, exporter = span_recorder(capture=True)
    mw = FlowoptMiddleware([], tracing=tracing)
    call = {"name": "calculator", "args": {"expression": "2*3"}, "id": "c7", "type": "tool_call"}
    request = ToolCallRequest(tool_call=call, tool=calculator, state={}, runtime=None)  # type: ignore[arg-type]

    def run_tool(req: ToolCallRequest) -> ToolMessage:
        return ToolMessage(calculator.invoke(req.tool_call["args"]), tool_call_id="c7")

    assert mw.wrap_tool_call(request, run_tool).content == "6"
    (span,) = spans(exporter, "execute_tool")
    attrs = dict(span.attributes or {})
    assert span.name == "execute_tool calculator"
    assert attrs[GenAI.OPERATION] == "execute_tool"
    assert (attrs[GenAI.TOOL_NAME], attrs[GenAI.TOOL_CALL_ID]) == ("calculator", "c7")
    assert attrs["gen_ai.tool.call.result"] == "6"


def _unsure_unless_strong(request: ModelRequest[Any]) -> AIMessage:
    """The agent's model answers with low token confidence; the strong tier with high."""
    strong = request.model is BACKUP_MODEL
    lp = -0.01 if strong else -3.0
    msg = answer("Paris." if strong else "Lyon?")
    msg.response_metadata["logprobs"] = {
        "content": [{"token": "x", "logprob": lp, "top_logprobs": []}]
    }
    return msg


def test_cascade_escalates_through_the_handler_with_logprobs_asked_for() -> None:
    tiers = [{"name": "small", "backend": "default"}, {"name": "large", "backend": "strong"}]
    mw = FlowoptMiddleware(
        [{"cascade": {"tiers": tiers, "threshold": 0.5}}], models={"strong": BACKUP_MODEL}
    )
    handler = FakeHandler(_unsure_unless_strong)
    res = mw.wrap_model_call(model_request(), handler)
    first, second = handler.requests
    assert (first.model, second.model) == (AGENT_MODEL, BACKUP_MODEL)
    # the cascade wants token logprobs: asked for through the model settings
    assert first.model_settings["logprobs"] is True
    assert res.result[0].content == "Paris."
    (decision,) = res.result[0].response_metadata["flowopt"]["decisions"]
    assert decision["action"] == "escalated"
    assert [t["accepted"] for t in decision["trail"]] == [False, True]
