"""The boundary rules, each with a real pipeline over the real vLLM server (SmolLM2).

Every test builds pipelines with :func:`flowopt.pipeline` and runs them with ``ainvoke`` /
``astream``; the cache is the real middleware with the real MiniLM embedder and the
shipped verifier. A boundary holds when crossing it makes the backend answer again.
"""

from __future__ import annotations

from typing import Any

import pytest

from flowopt import pipeline
from flowopt.backends.base import ModelInfo
from flowopt.backends.vllm import VLLMBackend
from flowopt.cache import CacheMiddleware, MemoryStore
from flowopt.result import Result

pytestmark = pytest.mark.integration

Q = "What is the capital of France?"
GREEDY = {"temperature": 0.0, "max_tokens": 24}


def cache_decision(result: Result) -> dict[str, Any]:
    (hop,) = result.hops
    (d,) = [d for d in hop.response.decisions if d.middleware == "cache"]
    return d.to_dict()


def make(
    vllm_url: str,
    model: str,
    cache: CacheMiddleware,
    *,
    name: str = "faq",
    params: dict[str, Any] | None = None,
    system: str | None = None,
    prompt: str = "{input}",
    backend: Any = None,
) -> Any:
    step: dict[str, Any] = {"name": "answer", "prompt": prompt, "params": params or GREEDY}
    if system:
        step["system"] = system
    return pipeline(
        name,
        backend=backend or {"vllm": {"base_url": vllm_url, "model": model}},
        middleware=[cache],
        steps=[step],
    )


@pytest.fixture()
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture()
def cache_factory(store: MemoryStore, minilm: Any, verifier: Any) -> Any:
    def make_cache(**kw: Any) -> CacheMiddleware:
        return CacheMiddleware(store=store, embedder=minilm, verifier=verifier, **kw)

    return make_cache


async def test_hit_within_tenant_miss_across_tenants(
    vllm_url: str, served_model: str, cache_factory: Any
) -> None:
    pipe = make(vllm_url, served_model, cache_factory())
    first = await pipe.ainvoke(Q, tenant="acme")
    assert cache_decision(first)["action"] == "miss" and cache_decision(first)["stored"]
    again = await pipe.ainvoke(Q, tenant="acme")
    assert cache_decision(again)["tier"] == "exact" and again.text == first.text
    other = await pipe.ainvoke(Q, tenant="globex")
    assert cache_decision(other)["action"] == "miss"
    assert other.usage.output_tokens > 0
    near_miss = await pipe.ainvoke("What is the capital of Germany?", tenant="acme")
    assert cache_decision(near_miss)["action"] == "miss"
    await pipe.aclose()


async def test_paraphrase_hits_near_miss_does_not(
    vllm_url: str, served_model: str, cache_factory: Any
) -> None:
    pipe = make(
        vllm_url,
        served_model,
        cache_factory(),
        system="Answer in one short sentence.",
        params={"temperature": 0.0, "max_tokens": 128},
    )
    first = await pipe.ainvoke("How do I reset my password?", tenant="acme")
    assert cache_decision(first)["stored"], cache_decision(first)  # not cut off
    para = await pipe.ainvoke("How can I reset my password?", tenant="acme")
    d = cache_decision(para)
    assert (d["action"], d["tier"], d["verdict"]) == ("hit", "semantic", "accepted"), d
    assert para.text == first.text and para.usage.total_tokens == 0
    near = await pipe.ainvoke("How do I reset my router?", tenant="acme")
    assert cache_decision(near)["action"] == "miss", cache_decision(near)
    elsewhere = await pipe.ainvoke("How can I reset my password?", tenant="globex")
    assert cache_decision(elsewhere)["action"] == "miss"
    await pipe.aclose()


async def test_user_scope_isolates_users(
    vllm_url: str, served_model: str, cache_factory: Any
) -> None:
    pipe = make(vllm_url, served_model, cache_factory(scope="user"))
    await pipe.ainvoke(Q, tenant="acme", user="alice")
    assert cache_decision(await pipe.ainvoke(Q, tenant="acme", user="alice"))["action"] == "hit"
    assert cache_decision(await pipe.ainvoke(Q, tenant="acme", user="bob"))["action"] == "miss"
    await pipe.aclose()


class RedeployedVLLM(VLLMBackend):
    """The same server after a redeploy with other weights: /v1/models reports another
    root. (A real backend; only the identity it reports differs.)"""

    async def model_info(self) -> ModelInfo:
        info = await super().model_info()
        return ModelInfo(id=info.id, root=f"{info.root}-v2", max_model_len=info.max_model_len)


async def test_model_identity_change_is_a_miss(
    vllm_url: str, served_model: str, cache_factory: Any
) -> None:
    old = make(vllm_url, served_model, cache_factory())
    await old.ainvoke(Q, tenant="acme")
    assert cache_decision(await old.ainvoke(Q, tenant="acme"))["action"] == "hit"
    new = make(
        vllm_url,
        served_model,
        cache_factory(),
        backend=RedeployedVLLM(base_url=vllm_url, model=served_model),
    )
    assert cache_decision(await new.ainvoke(Q, tenant="acme"))["action"] == "miss"
    await old.aclose()
    await new.aclose()


async def test_template_and_system_prompt_changes_are_misses(
    vllm_url: str, served_model: str, cache_factory: Any
) -> None:
    base = make(vllm_url, served_model, cache_factory())
    await base.ainvoke(Q, tenant="acme")
    other_template = make(vllm_url, served_model, cache_factory(), prompt="Q: {input}\nA:")
    assert cache_decision(await other_template.ainvoke(Q, tenant="acme"))["action"] == "miss"
    other_system = make(vllm_url, served_model, cache_factory(), system="Answer in French.")
    assert cache_decision(await other_system.ainvoke(Q, tenant="acme"))["action"] == "miss"
    for p in (base, other_template, other_system):
        await p.aclose()


async def test_sampling_parameters(vllm_url: str, served_model: str, cache_factory: Any) -> None:
    greedy = make(vllm_url, served_model, cache_factory())
    await greedy.ainvoke(Q, tenant="acme")
    sampled = make(
        vllm_url, served_model, cache_factory(), params={"temperature": 0.9, "max_tokens": 24}
    )
    for _ in range(2):
        d = cache_decision(await sampled.ainvoke(Q, tenant="acme"))
        assert (d["action"], d["skip_reason"]) == ("bypass", "sampled")
    longer = make(
        vllm_url, served_model, cache_factory(), params={"temperature": 0.0, "max_tokens": 40}
    )
    assert cache_decision(await longer.ainvoke(Q, tenant="acme"))["action"] == "miss"
    for p in (greedy, sampled, longer):
        await p.aclose()


async def test_pii_is_never_stored(
    vllm_url: str, served_model: str, cache_factory: Any, store: MemoryStore
) -> None:
    pipe = make(vllm_url, served_model, cache_factory())
    q = "Write a short reply to jane.doe@example.com saying thanks."
    for _ in range(2):
        d = cache_decision(await pipe.ainvoke(q, tenant="acme"))
        assert (d["action"], d["stored"], d["skip_reason"]) == ("miss", False, "pii")
    assert store.stats().entries == 0
    await pipe.aclose()


async def test_truncated_answers_are_never_stored(
    vllm_url: str, served_model: str, cache_factory: Any, store: MemoryStore
) -> None:
    pipe = make(
        vllm_url, served_model, cache_factory(), params={"temperature": 0.0, "max_tokens": 3}
    )
    q = "Explain in detail how a transformer neural network works."
    for _ in range(2):
        result = await pipe.ainvoke(q, tenant="acme")
        d = cache_decision(result)
        assert (d["action"], d["skip_reason"], d["skip_detail"]) == ("miss", "truncated", "length")
        assert result.usage.output_tokens == 3
    assert store.stats().entries == 0
    await pipe.aclose()


async def test_streamed_hit_replays_the_same_chunks(
    vllm_url: str, served_model: str, cache_factory: Any
) -> None:
    from flowopt.result import TokenEvent

    pipe = make(vllm_url, served_model, cache_factory())

    async def run() -> tuple[list[str], Result]:
        tokens: list[str] = []
        result: Result | None = None
        async for ev in pipe.astream("Name three primary colors.", tenant="acme"):
            if isinstance(ev, TokenEvent):
                tokens.append(ev.text)
            elif isinstance(ev, Result):
                result = ev
        assert result is not None
        return tokens, result

    live, first = await run()
    replayed, second = await run()
    assert cache_decision(first)["action"] == "miss"
    assert cache_decision(second)["action"] == "hit"
    assert replayed == live and len(live) > 1
    assert "".join(replayed).encode() == first.text.encode() == second.text.encode()
    await pipe.aclose()
