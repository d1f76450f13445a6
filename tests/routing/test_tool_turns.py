"""The cascade on tool-call turns: a tool call is judged by its tokens' confidence and by
being callable, never by the text verifier (unit tests over a named fake backend that
answers with a tool call)."""

from __future__ import annotations

from typing import Any

from flowopt import pipeline
from flowopt.messages import ToolCall
from flowopt.routing.cascade import tool_call_problem
from flowopt.testing import FakeBackend
from flowopt.types import Request, Response, TokenLogprob

TIERS = [{"name": "cheap", "backend": "default"}, {"name": "strong", "backend": "strong"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


class FakeToolCaller(FakeBackend):
    """A fake backend whose answer is one tool call (``name``, ``arguments``), with
    confident logprobs."""

    def __init__(self, tool: str, arguments: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.call = ToolCall("call_1", tool, arguments)

    async def generate(self, request: Request) -> Response:
        base = await super().generate(request)
        return base.replace(
            text="",
            tool_calls=(self.call,),
            finish_reason="tool_calls",
            logprobs=(TokenLogprob("x", -0.01),),
        )


def _request() -> Request:
    return Request.chat("look up a", params={"temperature": 0}, tools=TOOLS)


def test_tool_call_problem() -> None:
    req = _request()
    ok = Response("", "m", tool_calls=(ToolCall("c", "lookup", '{"q": 1}'),))
    assert tool_call_problem(req, ok) is None
    unknown = Response("", "m", tool_calls=(ToolCall("c", "delete_all", "{}"),))
    assert "undeclared" in (tool_call_problem(req, unknown) or "")
    broken = Response("", "m", tool_calls=(ToolCall("c", "lookup", "{oops"),))
    assert "not JSON" in (tool_call_problem(req, broken) or "")
    scalar = Response("", "m", tool_calls=(ToolCall("c", "lookup", "3"),))
    assert "not an object" in (tool_call_problem(req, scalar) or "")


async def _cascade(cheap: FakeBackend, strong: FakeBackend) -> Response:
    pipe = pipeline(
        "tools",
        backend=cheap,  # type: ignore[arg-type]
        backends={"strong": strong},  # type: ignore[dict-item]
        middleware=[{"cascade": {"tiers": TIERS, "threshold": 0.5}}],
        steps=[{"name": "a", "prompt": "{input}"}],
    )
    try:
        return await pipe.acall(_request())
    finally:
        await pipe.aclose()


async def test_a_confident_valid_tool_call_is_accepted_on_the_cheap_tier() -> None:
    cheap, strong = FakeToolCaller("lookup", '{"q": "a"}'), FakeBackend(name="strong")
    resp = await _cascade(cheap, strong)
    assert resp.tool_calls[0].name == "lookup" and not strong.calls
    trail = next(d for d in resp.decisions if d.middleware == "cascade").detail["trail"]
    assert trail[0]["accepted"] and trail[0]["tool_calls"] == 1


async def test_an_uncallable_tool_call_escalates() -> None:
    cheap = FakeToolCaller("rm_rf", "{}")
    strong = FakeToolCaller("lookup", '{"q": "a"}', name="strong")
    resp = await _cascade(cheap, strong)
    assert len(strong.calls) == 1 and resp.tool_calls[0].name == "lookup"
    trail = next(d for d in resp.decisions if d.middleware == "cascade").detail["trail"]
    assert not trail[0]["accepted"] and "undeclared" in trail[0]["rejected"]
