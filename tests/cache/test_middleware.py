"""Unit tests of the cache middleware through the real middleware stack, with fakes for
the backend and the embedder (the real-server versions are in test_boundaries.py)."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import FakeEmbedder, FakeFailingStore, FakeScriptedBackend

from flowopt.cache import CacheMiddleware, MemoryStore
from flowopt.cache.middleware import split_for_replay
from flowopt.errors import BackendUnavailable, IncompleteStream
from flowopt.middleware.base import PipelineContext, build_stack, traced_backend
from flowopt.testing.fakes import FakeBackend
from flowopt.types import Request, Response

G = {"temperature": 0.0}


async def stack(backend: Any, **options: Any) -> tuple[Any, CacheMiddleware]:
    options.setdefault("store", MemoryStore())
    options.setdefault("embedder", FakeEmbedder())
    options.setdefault("verify", False)
    options.setdefault("threshold", 0.75)
    mw = CacheMiddleware(**options)
    await mw.setup(PipelineContext("test", backend))
    return build_stack([("cache", mw)], traced_backend(backend, name="fake")), mw


def cache_decision(resp: Response) -> dict[str, Any]:
    (d,) = [d for d in resp.decisions if d.middleware == "cache"]
    return d.to_dict()


async def ask(handler: Any, text: str, **kw: Any) -> Response:
    kw.setdefault("params", G)
    resp: Response = await handler(Request.chat(text, **kw))
    return await resp.complete()


async def test_miss_then_exact_then_semantic_hit() -> None:
    backend = FakeBackend()
    h, _ = await stack(backend)
    first = await ask(h, "How do I reset my password?", tenant="t")
    assert cache_decision(first)["action"] == "miss" and cache_decision(first)["stored"]
    again = await ask(h, "How do I reset my password?", tenant="t")
    d = cache_decision(again)
    assert (d["action"], d["tier"], again.cached, again.text) == ("hit", "exact", True, first.text)
    assert again.usage.total_tokens == 0
    para = await ask(h, "how do I reset my password", tenant="t")
    assert cache_decision(para)["tier"] == "semantic"
    assert len(backend.calls) == 1


async def test_streamed_hit_replays_same_chunks_byte_identical() -> None:
    backend = FakeScriptedBackend(["Héllo", ", wörld", "\n", "😀 done."])
    h, _ = await stack(backend)
    first = await h(Request.chat("q1", params=G, stream=True))
    got1 = [c.text async for c in first.stream]
    second = await h(Request.chat("q1", params=G, stream=True))
    assert second.stream is not None
    got2 = [c async for c in second.stream]
    assert [c.text for c in got2] == got1 == backend.chunks
    assert [c.index for c in got2] == [0, 1, 2, 3]
    assert got2[-1].finish_reason == "stop"
    final = second.stream.response
    assert final is not None and final.cached and final.text.encode() == "".join(got1).encode()
    assert cache_decision(final)["action"] == "hit"
    assert backend.calls == 1


async def test_non_streamed_answer_replays_word_by_word() -> None:
    backend = FakeScriptedBackend(["one two  three\nfour"])
    h, _ = await stack(backend)
    await ask(h, "q")
    resp = await h(Request.chat("q", params=G, stream=True))
    texts = [c.text async for c in resp.stream]
    assert texts == ["one", " two", "  three", "\nfour"]
    assert split_for_replay("abcdef", 4) == ["abcd", "ef"]


@pytest.mark.parametrize(
    ("backend", "reason"),
    [
        (FakeScriptedBackend(finish_reason="length"), "truncated"),
        (FakeScriptedBackend(finish_reason="tool_calls"), "tool_call"),
        (FakeScriptedBackend(["mail ", "x@y.org"]), "pii"),
    ],
)
async def test_answers_that_must_not_be_replayed_are_not_stored(
    backend: FakeScriptedBackend, reason: str
) -> None:
    h, mw = await stack(backend)
    for _ in range(2):
        d = cache_decision(await ask(h, "q", tenant="t"))
        assert (d["action"], d["stored"], d["skip_reason"]) == ("miss", False, reason)
    assert backend.calls == 2
    assert mw.engine is not None and mw.engine.store.stats().entries == 0


async def test_aborted_stream_is_not_stored(spans: Any) -> None:
    backend = FakeScriptedBackend(["a", "b", "c"], break_after=2)
    h, mw = await stack(backend)
    resp = await h(Request.chat("q", params=G, stream=True))
    with pytest.raises(IncompleteStream):
        async for _ in resp.stream:
            pass
    assert mw.engine is not None and mw.engine.store.stats().entries == 0
    (span,) = spans.by_name("middleware cache")
    assert span.attributes["flowopt.cache.skip_reason"] == "stream_aborted"


async def test_consumer_closing_early_is_not_stored() -> None:
    backend = FakeScriptedBackend(["a", "b", "c"])
    h, mw = await stack(backend)
    resp = await h(Request.chat("q", params=G, stream=True))
    async with resp.stream as s:
        async for _ in s:
            break
    assert mw.engine is not None and mw.engine.store.stats().entries == 0


async def test_sampled_and_opted_out_requests_bypass() -> None:
    backend = FakeBackend()
    h, _ = await stack(backend)
    for _ in range(2):
        d = cache_decision(await ask(h, "q", params={"temperature": 0.8}))
        assert (d["action"], d["skip_reason"]) == ("bypass", "sampled")
    d = cache_decision(await ask(h, "q", metadata={"cache": False}))
    assert d["skip_reason"] == "disabled"
    seeded = {"temperature": 0.8, "seed": 7}
    await ask(h, "q", params=seeded)
    assert cache_decision(await ask(h, "q", params=seeded))["action"] == "hit"
    assert len(backend.calls) == 4


async def test_backend_error_propagates_and_is_recorded(spans: Any) -> None:
    backend = FakeBackend(fail=BackendUnavailable("down", endpoint="fake://"))
    h, mw = await stack(backend)
    with pytest.raises(BackendUnavailable):
        await ask(h, "q")
    (span,) = spans.by_name("middleware cache")
    assert span.attributes["flowopt.cache.skip_reason"] == "error"
    assert mw.engine is not None and mw.engine.store.stats().entries == 0


async def test_store_down_means_backend_answers_and_span_says_why(spans: Any) -> None:
    backend = FakeBackend()
    failing = FakeFailingStore()
    h, _ = await stack(backend, store=failing)
    resp = await ask(h, "What is a stray loss?", tenant="t")
    assert resp.text == "echo: What is a stray loss?" and not resp.cached
    d = cache_decision(resp)
    assert d["action"] == "miss" and d["skip_reason"] == "store_error"
    assert "connection refused" in d["store_error"]
    (span,) = spans.by_name("middleware cache")
    assert "connection refused" in span.attributes["flowopt.cache.store_error"]
    assert span.status.is_ok
    assert failing.calls >= 2  # looked up and tried to store


async def test_exact_store_down_falls_back_to_main_store() -> None:
    backend = FakeBackend()
    h, _ = await stack(backend, exact_store=FakeFailingStore())
    await ask(h, "q")
    hit = await ask(h, "q")
    assert cache_decision(hit)["action"] == "hit"
    assert "fake-failing" in cache_decision(hit)["store_error"]


async def test_ttl_and_tags_from_request_metadata() -> None:
    backend = FakeBackend()
    store = MemoryStore()
    h, _ = await stack(backend, store=store)
    await ask(h, "fresh", metadata={"cache.tags": ["pricing"]})
    await ask(h, "stale", metadata={"cache.ttl_s": -1})  # expires at once
    assert cache_decision(await ask(h, "stale"))["action"] == "miss"
    assert cache_decision(await ask(h, "fresh"))["action"] == "hit"
    assert store.invalidate(tag="pricing") == 1
    assert cache_decision(await ask(h, "fresh"))["action"] == "miss"


async def test_hit_span_attributes(spans: Any) -> None:
    h, _ = await stack(FakeBackend())
    await ask(h, "q", tenant="t")
    spans.clear()
    await ask(h, "q", tenant="t")
    (span,) = spans.by_name("middleware cache")
    a = span.attributes
    assert a["flowopt.cache.action"] == "hit" and a["flowopt.cache.hit"] is True
    assert a["flowopt.cache.tier"] == "exact" and a["flowopt.cache.verdict"] == "exact"
    assert a["flowopt.cache.age_s"] >= 0
    assert not spans.by_name("chat ")  # the backend was not called


async def test_model_identity_comes_from_every_backend() -> None:
    from flowopt.cache.middleware import _identity

    a, b = FakeScriptedBackend(root="r1"), FakeScriptedBackend(model="big", root="r2")
    one = await _identity(PipelineContext("p", a))
    two = await _identity(PipelineContext("p", a, backends={"default": a, "strong": b}))
    assert one != two and two.startswith(one + "|strong=big@")


async def test_middleware_conformance_suite() -> None:
    from flowopt.testing.conformance import run_middleware_conformance

    await run_middleware_conformance(
        lambda: CacheMiddleware(
            store=MemoryStore(), embedder=FakeEmbedder(), verify=False, threshold=0.9
        )
    )


async def test_registered_by_name_with_spec_options() -> None:
    from flowopt import registry

    cls = registry.middleware.load("cache")
    mw = cls(store="memory", ttl_s=60, scope="user", model_identity="m@1", semantic=False)
    assert isinstance(mw, CacheMiddleware)
    assert (mw.config.store, mw.config.ttl_s, mw.config.scope) == ("memory", 60, "user")
    h = build_stack([("cache", mw)], traced_backend(FakeBackend(), name="fake"))
    await ask(h, "q")
    assert cache_decision(await ask(h, "q"))["tier"] == "exact"
