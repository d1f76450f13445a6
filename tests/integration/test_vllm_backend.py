"""The vLLM backend against the real local server (started once per test session)."""

from __future__ import annotations

import asyncio

import pytest

from flowopt import BackendHTTPError, BackendUnavailable, Request, VLLMBackend

pytestmark = pytest.mark.integration

GREEDY = {"temperature": 0, "max_tokens": 12}


@pytest.fixture
def backend(vllm_url: str, served_model: str) -> VLLMBackend:
    return VLLMBackend(vllm_url, model=served_model)


async def test_model_identity_from_v1_models(backend: VLLMBackend, served_model: str) -> None:
    info = await backend.model_info()
    assert info.id == served_model
    assert info.max_model_len and info.max_model_len >= 512
    assert info.identity == (await VLLMBackend(backend.base_urls[0]).model_info()).identity


async def test_chat_and_completion(backend: VLLMBackend) -> None:
    chat = await backend.generate(Request.chat("Say hello.", params=GREEDY))
    assert chat.text.strip() and chat.usage.input_tokens > 0 and chat.usage.output_tokens > 0
    again = await backend.generate(Request.chat("Say hello.", params=GREEDY))
    assert again.text == chat.text  # greedy decoding is deterministic
    comp = await backend.generate(Request(prompt="The capital of France is", params=GREEDY))
    assert comp.text and comp.usage.input_tokens > 0


async def test_streaming_with_usage_matches_non_streamed(backend: VLLMBackend) -> None:
    plain = await backend.generate(Request.chat("Count to five.", params=GREEDY))
    r = await backend.generate(Request.chat("Count to five.", params=GREEDY, stream=True))
    assert r.stream is not None
    pieces = [c.text async for c in r.stream]
    final = r.stream.response
    assert final is not None and len(pieces) > 1
    assert "".join(pieces) == final.text == plain.text
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.ttft_ms is not None and final.ttft_ms <= final.latency_ms  # type: ignore[operator]


async def test_logprobs_chat_and_completion(backend: VLLMBackend) -> None:
    r = await backend.generate(
        Request.chat("Hi", params={**GREEDY, "logprobs": True, "top_logprobs": 3})
    )
    assert r.logprobs and len(r.logprobs) == r.usage.output_tokens
    assert all(lp.logprob <= 0 for lp in r.logprobs) and len(r.logprobs[0].top) >= 1
    c = await backend.generate(
        Request(prompt="One, two,", params={**GREEDY, "logprobs": True, "top_logprobs": 2})
    )
    assert c.logprobs


async def test_stop_sequences_and_length(backend: VLLMBackend) -> None:
    r = await backend.generate(
        Request(
            prompt="1, 2, 3, 4, 5, 6,", params={"temperature": 0, "max_tokens": 30, "stop": [" 9"]}
        )
    )
    assert " 9" not in r.text
    cut = await backend.generate(
        Request.chat("Tell me a long story.", params={"temperature": 0, "max_tokens": 3})
    )
    assert cut.finish_reason == "length" and cut.truncated


async def test_structured_choice(backend: VLLMBackend) -> None:
    r = await backend.generate(
        Request.chat(
            "Is the sky blue? Answer yes or no.",
            params={
                "temperature": 0,
                "max_tokens": 3,
                "extra": {"structured_outputs": {"choice": ["yes", "no"]}},
            },
        )
    )
    assert r.text in ("yes", "no")


async def test_concurrent_requests_are_batched(backend: VLLMBackend) -> None:
    reqs = [
        Request.chat(f"Say the number {i}.", params={"temperature": 0, "max_tokens": 8})
        for i in range(16)
    ]
    out = await asyncio.gather(*(backend.generate(r) for r in reqs))
    assert all(o.text for o in out)


async def test_bad_model_is_http_error_naming_endpoint(vllm_url: str) -> None:
    b = VLLMBackend(vllm_url, model="no-such-model")
    with pytest.raises(BackendHTTPError) as err:
        await b.generate(Request.chat("hi", params=GREEDY))
    assert err.value.status in (400, 404) and vllm_url.rstrip("/").removesuffix("/v1") in str(
        err.value
    )


async def test_server_down_is_unavailable() -> None:
    from flowopt.local.server import find_free_port

    b = VLLMBackend(f"http://127.0.0.1:{find_free_port()}", model="m")
    with pytest.raises(BackendUnavailable, match="cannot connect"):
        await b.generate(Request.chat("hi"))
