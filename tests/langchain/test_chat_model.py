"""ChatFlowopt's flowopt-specific behaviour: the stack's decisions in ``response_metadata``,
what flowopt's cache does on tool turns, LangChain's cache next to flowopt's, how calls
become requests, and typed errors.

Tests marked ``integration`` run against the real vLLM server serving Qwen2.5-Coder-0.5B
with tool calling (``qwen_url``); the others use flowopt's fake backend and need no server.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool

import flowopt
from flowopt import _runner
from flowopt.errors import BackendUnavailable, ConfigError, InvalidRequestError
from flowopt.langchain import ChatFlowopt
from flowopt.messages import ToolCall
from flowopt.stream import replay
from flowopt.testing.fakes import FakeBackend
from flowopt.types import Request, Response

QWEN = "qwen0.5b"
CACHE = {"cache": {"store": "memory", "semantic": False}}


@tool
def magic_function(input: int) -> int:
    """Apply a magic function to an input."""
    return input + 2


@tool
def get_weather(location: str) -> str:
    """Get the weather at a location."""
    return "It's sunny."


def _cache_decision(message: AIMessage) -> dict[str, Any]:
    found = [
        d for d in message.response_metadata["flowopt"]["decisions"] if d["middleware"] == "cache"
    ]
    assert len(found) == 1, message.response_metadata
    return found[0]


class ToolCallingFake(FakeBackend):
    """Answers every request with one call of ``magic_function`` and some text, finish
    reason ``stop`` (what vLLM sends for a named ``tool_choice``)."""

    async def generate(self, request: Request) -> Response:
        self.calls.append(request)
        call = ToolCall("call_1", "magic_function", json.dumps({"input": 3}))
        response = Response(
            text="calling it",
            model=self.model,
            finish_reason="stop",
            tool_calls=(call,),
            backend=self.name,
        )
        return replay(response, chunk_texts=["call", "ing it"]) if request.stream else response


@pytest.fixture
def no_global_cache() -> Iterator[None]:
    before = get_llm_cache()
    set_llm_cache(None)
    try:
        yield
    finally:
        set_llm_cache(before)


# -- construction ------------------------------------------------------------------------
def test_bad_backend_config_is_a_config_error_at_construction() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        ChatFlowopt(backend={"vllm": {"url": "http://127.0.0.1:1", "model": "m"}})
    with pytest.raises(ConfigError, match="nope"):
        ChatFlowopt(backend={"nope": {}})
    with pytest.raises(ConfigError, match="needs a backend"):
        ChatFlowopt()
    with pytest.raises(ConfigError, match="'strong'"):
        ChatFlowopt(backend={"fake": {}}, route="strong")
    with pytest.raises(ConfigError, match="both retry"):
        ChatFlowopt(backend={"fake": {}}, middleware=["resilience"], max_retries=2)
    with pytest.raises(ConfigError, match="middleware"):
        ChatFlowopt(backend={"fake": {}}, middleware=["no-such-layer"])
    with pytest.raises(InvalidRequestError, match="temperature"):
        ChatFlowopt(backend={"fake": {}}, temperature=5)


def test_max_retries_adds_an_inner_retry_layer_and_secrets_stay_out_of_params() -> None:
    model = ChatFlowopt(
        backend={"vllm": {"base_url": "http://127.0.0.1:1", "model": "m"}},
        middleware=[CACHE],
        max_retries=2,
        api_key="sekrit-key",
    )
    params = model._identifying_params
    assert params["middleware"][-1] == {"retry": 3}
    assert params["backend"]["vllm"]["api_key"] == "***"
    assert "sekrit" not in repr(params)
    assert model.flowopt_pipeline.backends["default"]._api_key == "sekrit-key"  # type: ignore[attr-defined]


# -- LangChain's cache next to flowopt's -------------------------------------------------
def test_a_langchain_cache_next_to_flowopts_cache_is_refused() -> None:
    for cache in (InMemoryCache(), True):
        with pytest.raises(ConfigError, match="cached twice"):
            ChatFlowopt(backend={"fake": {}}, middleware=[CACHE], cache=cache)


def test_a_global_langchain_cache_is_skipped_with_a_warning(no_global_cache: None) -> None:
    lc_cache = InMemoryCache()
    set_llm_cache(lc_cache)
    backend = FakeBackend()
    model = ChatFlowopt(backend=backend, middleware=[CACHE], temperature=0)
    assert model.cache is False
    with pytest.warns(UserWarning, match="skips it"):
        first = model.invoke("hello there")
    second = model.invoke("hello there")  # warned once per model
    assert not first.response_metadata["flowopt"]["cached"]
    assert second.response_metadata["flowopt"]["cached"]
    assert len(backend.calls) == 1
    assert lc_cache._cache == {}  # nothing stored twice
    quiet = ChatFlowopt(backend=FakeBackend(), middleware=[CACHE], temperature=0, cache=False)
    with warnings_as_errors():
        quiet.invoke("hello there")


def test_langchain_cache_works_when_the_stack_has_no_flowopt_cache(no_global_cache: None) -> None:
    backend = FakeBackend()
    model = ChatFlowopt(backend=backend, temperature=0, cache=InMemoryCache())
    first = model.invoke("hello there")
    second = model.invoke("hello there")
    assert first.content == second.content == "echo: hello there"
    assert len(backend.calls) == 1


class warnings_as_errors:
    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


# -- calls become requests ---------------------------------------------------------------
def test_a_call_becomes_one_request() -> None:
    backend = FakeBackend()
    model = ChatFlowopt(
        backend=backend,
        temperature=0,
        max_tokens=20,
        stop=["END"],
        model_kwargs={"top_k": 5},
        tenant="acme",
        timeout=30,
    )
    model.invoke("hi", model="other-model", seed=7, stop=["STOP"], repetition_penalty=1.1)
    request = backend.calls[-1]
    assert request.model == "other-model"
    assert request.tenant == "acme"
    assert request.params.temperature == 0 and request.params.max_tokens == 20
    assert request.params.seed == 7 and request.params.stop == ("STOP",)
    assert dict(request.params.extra) == {"top_k": 5, "repetition_penalty": 1.1}
    assert request.deadline is not None and 25 < (request.remaining() or 0) <= 30

    bound = model.bind_tools(
        [magic_function, get_weather], tool_choice="any", parallel_tool_calls=False
    )
    bound.invoke("hi")
    request = backend.calls[-1]
    assert [t["function"]["name"] for t in request.tools] == ["magic_function", "get_weather"]
    assert request.tool_choice == "required" and request.parallel_tool_calls is False
    model.bind_tools([magic_function], tool_choice="magic_function").invoke("hi")
    assert dict(backend.calls[-1].tool_choice["function"]) == {"name": "magic_function"}  # type: ignore[index]
    with pytest.raises(InvalidRequestError, match="names no bound tool"):
        model.bind_tools([magic_function], tool_choice="other")


def test_backend_pin_and_from_pipeline_defaults() -> None:
    cheap, strong = FakeBackend(name="cheap"), FakeBackend(lambda r: "strong answer", name="strong")
    model = ChatFlowopt(backend=cheap, backends={"strong": strong})
    assert model.invoke("q").content == "echo: q"
    assert model.invoke("q", backend="strong").content == "strong answer"

    pipe = flowopt.pipeline(
        "mine",
        backend=FakeBackend(name="cheap"),
        backends={"strong": strong},
        defaults={"temperature": 0, "max_tokens": 9},
        steps=[{"name": "answer", "prompt": "{input}"}],
    )
    wrapped = ChatFlowopt.from_pipeline(pipe, backend="strong", max_tokens=4)
    message = wrapped.invoke("q")
    assert message.content == "strong answer"
    assert message.response_metadata["flowopt"]["backend"] == "strong"
    assert strong.calls[-1].params.temperature == 0 and strong.calls[-1].params.max_tokens == 4
    with pytest.raises(ConfigError, match="comes built"):
        ChatFlowopt.from_pipeline(pipe, max_retries=2)


# -- errors and loops --------------------------------------------------------------------
async def test_typed_errors_pass_through_as_themselves() -> None:
    down = BackendUnavailable("cannot connect", endpoint="http://x", hint="start it")
    model = ChatFlowopt(backend=FakeBackend(fail=down))
    with pytest.raises(BackendUnavailable) as sync_err:
        await asyncio.to_thread(model.invoke, "hi")
    assert sync_err.value is down
    with pytest.raises(BackendUnavailable):
        await model.ainvoke("hi")
    with pytest.raises(BackendUnavailable):
        async for _ in model.astream("hi"):
            pass


async def test_sync_call_from_a_running_loop_works_and_from_flowopts_loop_fails_clearly() -> None:
    model = ChatFlowopt(backend=FakeBackend())
    assert model.invoke("from a loop").content == "echo: from a loop"  # blocks, but works

    async def inside() -> None:
        model.invoke("nested")

    with pytest.raises(RuntimeError, match="flowopt's own event loop"):
        await asyncio.to_thread(_runner.run, inside())


class _Closes:
    """A pass-through middleware that records being closed."""

    name = "closes"

    def __init__(self) -> None:
        self.closed = threading.Event()

    async def __call__(self, request: Request, call_next: Any) -> Response:
        return await call_next(request)

    async def aclose(self) -> None:
        self.closed.set()


def test_a_collected_model_releases_its_own_stack_but_not_a_given_pipeline() -> None:
    layer = _Closes()
    model = ChatFlowopt(backend=FakeBackend(), middleware=[layer])
    model.invoke("hi")
    del model
    gc.collect()
    assert layer.closed.wait(5)

    kept = _Closes()
    pipe = flowopt.pipeline(
        "kept", backend=FakeBackend(), middleware=[kept], steps=[{"name": "a", "prompt": "{input}"}]
    )
    wrapped = ChatFlowopt.from_pipeline(pipe)
    wrapped.invoke("hi")
    del wrapped
    gc.collect()
    assert not kept.closed.wait(0.2)
    assert pipe.invoke("still open").text == "echo: still open"


def test_streaming_true_streams_invoke_through_callbacks() -> None:
    tokens: list[str] = []

    class Tokens(BaseCallbackHandler):
        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            tokens.append(token)

    model = ChatFlowopt(backend=FakeBackend(), streaming=True)
    message = model.invoke("one two", config={"callbacks": [Tokens()]})
    assert message.content == "echo: one two" == "".join(tokens)
    assert message.usage_metadata is not None


def test_tool_call_answers_are_never_stored_even_with_finish_reason_stop() -> None:
    backend = ToolCallingFake()
    model = ChatFlowopt(backend=backend, middleware=[CACHE], temperature=0).bind_tools(
        [magic_function], tool_choice="magic_function"
    )
    first = model.invoke("magic of 3?")
    second = model.invoke("magic of 3?")
    assert first.tool_calls == second.tool_calls
    assert first.tool_calls[0]["args"] == {"input": 3}
    assert not second.response_metadata["flowopt"]["cached"]
    assert _cache_decision(first)["skip_reason"] == "tool_call"
    assert len(backend.calls) == 2
    full: Any = None
    for chunk in model.stream("magic of 3?"):
        full = chunk if full is None else full + chunk
    assert full.tool_calls[0]["args"] == {"input": 3} and full.content == "calling it"


# -- against the real server -------------------------------------------------------------
def _qwen(url: str, **kw: Any) -> ChatFlowopt:
    return ChatFlowopt(
        backend={"vllm": {"base_url": url, "model": QWEN, "timeout": 120}},
        temperature=0,
        max_tokens=kw.pop("max_tokens", 48),
        **kw,
    )


@pytest.mark.integration
def test_a_cache_hit_is_visible_in_response_metadata(qwen_url: str) -> None:
    model = _qwen(qwen_url, middleware=[CACHE])
    first = model.invoke("Name one primary colour.")
    second = model.invoke("Name one primary colour.")
    assert _cache_decision(first)["action"] == "miss"
    assert second.response_metadata["flowopt"]["cached"] is True
    assert _cache_decision(second)["action"] == "hit"
    assert second.content == first.content and second.usage_metadata is not None


@pytest.mark.integration
def test_the_cache_keys_on_tools(qwen_url: str) -> None:
    model = _qwen(qwen_url, middleware=[CACHE])
    with_a = model.bind_tools([magic_function], tool_choice="none")
    with_b = model.bind_tools([get_weather], tool_choice="none")
    q = "Say hello in French."
    assert not with_a.invoke(q).response_metadata["flowopt"]["cached"]
    other = with_b.invoke(q)
    assert not other.response_metadata["flowopt"]["cached"]  # another tool set: no hit
    assert with_a.invoke(q).response_metadata["flowopt"]["cached"]  # same tools: hit


@pytest.mark.integration
def test_streamed_tool_calls_are_assembled(qwen_url: str) -> None:
    model = _qwen(qwen_url, middleware=[CACHE]).bind_tools([magic_function], tool_choice="any")
    chunks = list(model.stream("What is the value of magic_function(3)? Use the tool."))
    full: Any = None
    for chunk in chunks:
        full = chunk if full is None else full + chunk
    assert isinstance(full, AIMessageChunk)
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("magic_function", {"input": 3})]
    assert sum(1 for c in chunks if c.tool_call_chunks) >= 2  # arrived in pieces
    last = chunks[-1]
    assert last.chunk_position == "last" and last.usage_metadata is not None
    assert last.response_metadata["finish_reason"] in ("tool_calls", "stop")
    assert full.usage_metadata is not None and full.usage_metadata["input_tokens"] > 0


@pytest.mark.integration
def test_tool_round_trip_and_the_cache_stays_out_of_tool_turns(qwen_url: str) -> None:
    model = _qwen(qwen_url, middleware=[CACHE], max_tokens=64)
    question = HumanMessage("What is the value of magic_function(3)? Use the tool.")
    call = model.bind_tools([magic_function], tool_choice="magic_function").invoke([question])
    assert isinstance(call, AIMessage) and call.tool_calls
    assert _cache_decision(call)["skip_reason"] in ("tool_call", "empty")
    result = magic_function.invoke(call.tool_calls[0])
    assert isinstance(result, ToolMessage) and result.content == "5"
    answer = model.bind_tools([magic_function]).invoke([question, call, result])
    assert isinstance(answer, AIMessage) and answer.text
    decision = _cache_decision(answer)
    assert decision["action"] == "bypass" and decision["skip_reason"] == "tools"


class _Tokens(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


@pytest.mark.integration
async def test_async_invoke_and_stream_report_tokens(qwen_url: str) -> None:
    model = _qwen(qwen_url, middleware=[CACHE])
    message = await model.ainvoke("Count from 1 to 5.")
    assert message.text and message.usage_metadata is not None
    handler = _Tokens()
    text = ""
    async for chunk in model.astream("Count from 1 to 5.", config={"callbacks": [handler]}):
        text += chunk.text
    assert text == message.text  # served from flowopt's cache, replayed as a stream
    assert "".join(handler.tokens) == text
    await model.aclose()


@pytest.mark.integration
def test_from_pipeline_runs_the_pipelines_stack(qwen_url: str) -> None:
    def vllm(name: str) -> dict[str, Any]:
        return {"vllm": {"base_url": qwen_url, "model": QWEN, "name": name}}

    pipe = flowopt.pipeline(
        "tiers",
        backend=vllm("cheap-qwen"),
        backends={"strong": vllm("strong-qwen")},
        middleware=[CACHE],
        defaults={"temperature": 0, "max_tokens": 24},
        steps=[{"name": "answer", "prompt": "{input}"}],
    )
    model = ChatFlowopt.from_pipeline(pipe, backend="strong")
    first = model.invoke("Name a fruit.")
    assert first.response_metadata["flowopt"]["backend"] == "strong-qwen"
    assert model.invoke("Name a fruit.").response_metadata["flowopt"]["cached"]
    pipe.close()
