"""LangChain's standard chat model suites, run on ChatFlowopt.

The unit suite builds models over flowopt's ``fake`` backend (no network, no server); the
integration suite runs every call through a real stack (flowopt's cache and resilience)
over the real vLLM server serving Qwen2.5-Coder-0.5B-Instruct with tool calling (the
``qwen_url`` fixture starts one when ``FLOWOPT_TEST_QWEN_URL`` is unset).

Capability flags say what the stack really does with this model: tool calling with
``tool_choice`` (vLLM forces ``"required"`` and named choices with guided decoding),
structured output (``json_schema``: vLLM's structured outputs) and JSON mode
(``json_object``); no image, audio or PDF input (a text-only model).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from flowopt.langchain import ChatFlowopt

QWEN = "qwen0.5b"


class _Benchmark:
    @pytest.fixture
    def benchmark(self, codspeed_benchmark: Any) -> Any:
        """pytest-benchmark 5.2 reads ``Node._nodeid``, which pytest 9 no longer has, so
        its fixture errors at setup; pytest-codspeed's (also a langchain-tests
        dependency) takes the same call and runs the benchmarked function."""
        return codspeed_benchmark


class TestChatFlowoptUnit(_Benchmark, ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatFlowopt]:
        return ChatFlowopt

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "backend": {"fake": {"model": "fake-model"}},
            "middleware": [{"cache": {"store": "memory", "semantic": False}}],
        }

    @property
    def supports_json_mode(self) -> bool:
        return True


@pytest.mark.integration
class TestChatFlowoptIntegration(_Benchmark, ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _server(self, qwen_url: str) -> None:
        # Autouse fixtures run before `model`, which reads chat_model_params.
        self._qwen_url = qwen_url

    @property
    def chat_model_class(self) -> type[ChatFlowopt]:
        return ChatFlowopt

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "backend": {"vllm": {"base_url": self._qwen_url, "model": QWEN, "timeout": 120}},
            "middleware": [{"cache": {"store": "memory", "semantic": False}}, "resilience"],
            "temperature": 0,
            "max_tokens": 128,
            # Forced calls (tool_choice "any" or a name) are guided by vLLM; with strict
            # schemas the guide also forbids extra keys, which the 0.5B model otherwise
            # fills with a copy of the schema for a tool that takes no arguments
            # (test_tool_calling_with_no_arguments got {"properties": {}, "type": "object"}).
            "strict_tools": True,
        }

    @property
    def supports_json_mode(self) -> bool:
        return True

    @pytest.mark.xfail(
        reason="model limit: with tool_choice='auto' Qwen2.5-Coder-0.5B-Instruct writes the "
        "get_weather call as a ```json fenced block instead of the <tool_call>...</tool_call> "
        "tags vLLM's hermes parser reads, so the server returns it as text and the message "
        "has no tool call (forced calls work: test_tool_calling, test_tool_choice)"
    )
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @property
    def model_override_value(self) -> str:
        # The server serves one model; this checks that a per-call `model=` reaches the
        # request and comes back in response_metadata (tests/langchain/test_chat_model.py
        # checks it is the name sent).
        return QWEN
