"""Episodic memory against real parts (Mem0 with qdrant on disk, the packaged MiniLM) and no
LLM at all (``extractor: none``): every turn is kept verbatim as its own memory, with its
turn id as provenance, PII-flagged turns are not kept, and recall finds the exact turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowopt.memory import MemoryKey, MemoryMiddleware
from flowopt.memory.extract import Turn
from flowopt.types import Request

pytestmark = pytest.mark.asyncio


async def test_turns_become_episodes_with_their_own_provenance(tmp_path: Path) -> None:
    mw = MemoryMiddleware(
        long_term=True,
        data_dir=str(tmp_path),
        debounce_s=0,
        extractor="none",
        episodic=True,
        # never called with extractor none; Mem0's config still names an LLM
        llm_base_url="http://127.0.0.1:9",
        llm_model="unused",
    )
    await mw.setup()
    assert mw.store is not None and mw.queue is not None
    alice, bob = MemoryKey("t1", user="alice"), MemoryKey("t1", user="bob")
    turns = [
        Turn("s1-1", "user", "I adopted a grey cat named Pixel last spring.", "2026-03-01"),
        Turn("s1-2", "Sam", "We moved the book club to Thursdays.", "2026-03-01"),
        Turn("s1-3", "user", "My card number is 4111 1111 1111 1111.", "2026-03-01"),
    ]
    assert mw.observe(alice, turns, conversation="alice#s1")
    assert mw.observe(bob, [Turn("b-1", "user", "I play the cello.")], conversation="bob#s1")
    assert mw.queue.drain(timeout=120)

    stored = {m.sources: m for m in mw.store.memories(alice)}
    assert set(stored) == {("s1-1",), ("s1-2",)}  # the card number was not kept
    assert stored[("s1-1",)].text == turns[0].text
    assert stored[("s1-2",)].text == "Sam: We moved the book club to Thursdays."
    assert stored[("s1-1",)].at == "2026-03-01"

    detail: dict[str, object] = {}
    req = Request.chat("What is the name of my cat?", tenant="t1", user="alice")
    await mw.recall_into(req, alice, detail)
    ids = detail["memory_ids"]
    assert isinstance(ids, list) and ids
    first = next(m for m in mw.store.memories(alice) if m.id == ids[0])
    assert first.sources == ("s1-1",)
    bob_ids = {m.id for m in mw.store.memories(bob)}
    assert not bob_ids & set(ids)  # never another user's episode
    await mw.aclose()


async def test_two_processes_share_memories_through_pgvector(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """``postgres_url``: the vectors live in pgvector on a real Postgres, so a second
    middleware (another process: its own data dir, its own Mem0) recalls what the first
    stored, and forgetting from the second removes them for both."""

    def make(name: str) -> MemoryMiddleware:
        return MemoryMiddleware(
            long_term=True,
            data_dir=str(tmp_path / name),
            postgres_url=postgres_dsn,
            collection="flowopt_memory_shared_test",
            debounce_s=0,
            extractor="none",
            episodic=True,
            llm_base_url="http://127.0.0.1:9",
            llm_model="unused",
        )

    writer, reader = make("a"), make("b")
    await writer.setup()
    await reader.setup()
    assert writer.queue is not None and writer.store is not None and reader.store is not None
    alice = MemoryKey("t1", user="alice")
    assert writer.observe(alice, [Turn("w-1", "user", "My sister lives in Lisbon.")])
    assert writer.queue.drain(timeout=120)

    seen = reader.store.memories(alice)
    assert [(m.text, m.sources) for m in seen] == [("My sister lives in Lisbon.", ("w-1",))]
    assert reader.store.memories(MemoryKey("t2", user="alice")) == []  # tenant in the key

    assert reader.forget(tenant="t1", user="alice") == 1
    assert writer.store.memories(alice) == []
    await writer.aclose()
    await reader.aclose()
