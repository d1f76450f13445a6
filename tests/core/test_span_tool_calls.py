"""Tool calls on backend spans, as the GenAI conventions write them: the finish reason
``tool_calls``, and (with content capture) ``tool_call`` / ``tool_call_response`` parts."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flowopt.messages import ToolCall
from flowopt.tracing import GenAI, record_request, record_response
from flowopt.types import Message, Request, Response

CALL = ToolCall("call_1", "calculator", '{"expression": "17 * 23"}')


def _span_attrs(request: Request, response: Response, capture: bool) -> dict[str, Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("chat m")
    record_request(span, request, provider="vllm", endpoint=None, capture_content=capture)
    record_response(span, response, capture_content=capture)
    span.end()
    (finished,) = exporter.get_finished_spans()
    return dict(finished.attributes or {})


def test_a_tool_calling_answer_reports_tool_calls_even_when_the_server_says_stop() -> None:
    for finish in ("tool_calls", "stop"):
        answer = Response("", "m", finish_reason=finish, tool_calls=(CALL,))
        attrs = _span_attrs(Request.chat("q"), answer, capture=False)
        assert list(attrs[GenAI.RESPONSE_FINISH]) == ["tool_calls"]  # type: ignore[call-overload]
        assert GenAI.OUTPUT_MESSAGES not in attrs  # content stays off unless captured


def test_captured_content_carries_tool_call_parts() -> None:
    request = Request.chat(
        [
            Message("user", "What is 17 * 23?"),
            Message("assistant", None, tool_calls=(CALL,)),
            Message("tool", "391", tool_call_id="call_1"),
        ]
    )
    answer = Response("", "m", finish_reason="tool_calls", tool_calls=(CALL,))
    attrs = _span_attrs(request, answer, capture=True)
    inputs = json.loads(str(attrs[GenAI.INPUT_MESSAGES]))
    assert inputs[1] == {
        "role": "assistant",
        "parts": [
            {
                "type": "tool_call",
                "id": "call_1",
                "name": "calculator",
                "arguments": {"expression": "17 * 23"},
            }
        ],
    }
    assert inputs[2] == {
        "role": "tool",
        "parts": [{"type": "tool_call_response", "id": "call_1", "response": "391"}],
    }
    (out,) = json.loads(str(attrs[GenAI.OUTPUT_MESSAGES]))
    assert out["finish_reason"] == "tool_calls"
    assert [p["type"] for p in out["parts"]] == ["tool_call"]
