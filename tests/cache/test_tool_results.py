"""Unit tests: what the cache does with tool turns (no servers, no model).

An answer that calls tools is never stored; a conversation holding tool results is cached
only when ``tool_results: pure`` names every tool it used; tool call ids do not split the
key (servers draw a new random id per call).
"""

from __future__ import annotations

import pytest

from flowopt.cache.config import CacheConfig
from flowopt.cache.keys import cache_key
from flowopt.cache.middleware import CacheMiddleware
from flowopt.cache.policy import (
    RegexPIIDetector,
    SkipReason,
    request_bypass_reason,
    response_skip_reason,
)
from flowopt.errors import ConfigError
from flowopt.messages import ToolCall
from flowopt.types import Message, Request, Response

G = {"temperature": 0.0}
TOOLS = [
    {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}},
]


def _turns(call_id: str, name: str = "calculator", result: str = "391") -> Request:
    return Request.chat(
        [
            Message("user", "What is 17 * 23?"),
            Message(
                "assistant",
                None,
                tool_calls=(ToolCall(call_id, name, '{"expression": "17 * 23"}'),),
            ),
            Message("tool", result, tool_call_id=call_id),
        ],
        params=G,
        tools=TOOLS,
    )


def _bypass(req: Request, **policy: object) -> str | None:
    return request_bypass_reason(req, max_temperature=0.1, **policy)  # type: ignore[arg-type]


def test_tool_results_bypass_by_default() -> None:
    assert _bypass(_turns("a")) == SkipReason.TOOLS


def test_pure_tools_make_tool_results_cacheable() -> None:
    assert _bypass(_turns("a"), tool_results="pure", pure_tools=("calculator",)) is None
    assert _bypass(_turns("a"), tool_results="pure", pure_tools=("*",)) is None


def test_an_impure_tool_result_still_bypasses() -> None:
    req = _turns("a", name="clock", result="12:00")
    assert _bypass(req, tool_results="pure", pure_tools=("calculator",)) == SkipReason.TOOLS


def test_a_tool_result_answering_no_known_call_is_not_pure() -> None:
    req = Request.chat(
        [Message("user", "q"), Message("tool", "x", tool_call_id="ghost")],
        params=G,
    )
    assert _bypass(req, tool_results="pure", pure_tools=("calculator",)) == SkipReason.TOOLS


def test_pure_setting_without_a_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pure_tools"):
        CacheConfig(tool_results="pure")
    cache = CacheMiddleware(store="memory", semantic=False, tool_results="pure", pure_tools=["*"])
    assert cache.config.pure_tools == ("*",)


def test_tool_call_ids_do_not_split_the_key() -> None:
    a = cache_key(_turns("chatcmpl-tool-1111"), model_identity="m")
    b = cache_key(_turns("chatcmpl-tool-2222"), model_identity="m")
    assert (a.partition, a.exact) == (b.partition, b.exact)
    other = cache_key(_turns("chatcmpl-tool-3333", result="392"), model_identity="m")
    assert other.partition != a.partition  # the result itself is content


def test_a_different_tool_list_changes_the_partition() -> None:
    a = cache_key(Request.chat("What is 17 * 23?", params=G, tools=TOOLS), model_identity="m")
    b = cache_key(Request.chat("What is 17 * 23?", params=G, tools=TOOLS[:1]), model_identity="m")
    assert a.partition != b.partition


@pytest.mark.parametrize("finish", ["tool_calls", "stop"])
def test_an_answer_with_tool_calls_is_never_stored(finish: str) -> None:
    # vLLM finishes some tool-calling turns with "stop": the typed field decides
    answer = Response(
        "", "m", finish_reason=finish, tool_calls=(ToolCall("c1", "calculator", "{}"),)
    )
    got = response_skip_reason(Request.chat("q", params=G), answer, [RegexPIIDetector()])
    assert got is not None and got[0] == SkipReason.TOOL_CALL
