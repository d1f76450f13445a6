"""Store conformance: every store keeps the rules of flowopt.cache.stores.base.

The embedded stores run here; Postgres and Redis run the same checks in
``test_shared_tier.py`` against real servers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from flowopt.cache.stores.base import Entry, Store
from flowopt.cache.stores.gptcache import GPTCacheStore
from flowopt.cache.stores.memory import MemoryStore


def unit(seed: int, dim: int = 384) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def entry(
    key: str,
    *,
    partition: str = "p1",
    tenant: str = "t1",
    model: str = "m1",
    vec: int | None = 0,
    tags: tuple[str, ...] = (),
    expires_in: float | None = 3600.0,
    text: str | None = None,
) -> Entry:
    now = time.time()
    return Entry(
        exact_key=key,
        partition=partition,
        tenant=tenant,
        model_identity=model,
        question=f"question {key}",
        text=text or f"answer {key}",
        chunks=("answer ", key),
        response={"model": "m", "finish_reason": "stop"},
        tags=tags,
        created_at=now,
        expires_at=None if expires_in is None else now + expires_in,
        embedding=None if vec is None else unit(vec),
    )


def check_conformance(store: Store) -> None:
    """The store rules, shared by every store's test."""
    store.put(entry("a", partition="p1", vec=1))
    store.put(entry("b", partition="p2", tenant="t2", vec=1))
    # exact: found, byte-identical, chunks kept
    got = store.get_exact("a")
    assert got is not None and got.text == "answer a" and got.chunks == ("answer ", "a")
    # search stays inside the partition even when another partition holds the same vector
    if store.semantic:
        hits = store.search("p1", unit(1), 5)
        assert [c.entry.exact_key for c in hits] == ["a"]
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert store.search("p3", unit(1), 5) == []
    # replace on put
    store.put(entry("a", partition="p1", vec=1, text="new answer"))
    got = store.get_exact("a")
    assert got is not None and got.text == "new answer"
    # expired entries are never returned (no waiting: the entry is born expired)
    store.put(entry("old", partition="p1", vec=2, expires_in=-1.0))
    assert store.get_exact("old") is None
    if store.semantic:
        assert "old" not in [c.entry.exact_key for c in store.search("p1", unit(2), 5)]
    # invalidation by tenant / model / tag (all criteria must match)
    store.put(entry("c", partition="p1", model="m2", vec=3, tags=("faq",)))
    store.put(entry("d", partition="p1", model="m2", vec=4))
    assert store.invalidate() == 0
    assert store.invalidate(tag="faq") == 1
    assert store.get_exact("c") is None
    assert store.invalidate(tenant="t1", model_identity="m2") == 1
    assert store.get_exact("d") is None
    assert store.get_exact("a") is not None
    assert store.invalidate(tenant="t2") == 1
    assert store.get_exact("b") is None
    assert store.clear() >= 1
    assert store.get_exact("a") is None


@pytest.fixture(params=["memory", "gptcache"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Store]]:
    opened: list[Store] = []

    def make(**kw: object) -> Store:
        s: Store = (
            MemoryStore(**kw)  # type: ignore[arg-type]
            if request.param == "memory"
            else GPTCacheStore(tmp_path / "gc", **kw)  # type: ignore[arg-type]
        )
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def test_conformance(make_store: Callable[..., Store]) -> None:
    check_conformance(make_store())


def test_size_bound_evicts_least_recently_used(make_store: Callable[..., Store]) -> None:
    store = make_store(max_entries=20)
    for i in range(20):
        store.put(entry(f"k{i}", vec=i))
    assert store.get_exact("k0") is not None  # k0 is now recently used
    for i in range(20, 60):
        store.put(entry(f"k{i}", vec=i))
    assert store.stats().entries <= 20
    assert store.get_exact("k59") is not None
    assert store.get_exact("k1") is None


def test_gptcache_store_persists_and_never_pip_installs(tmp_path: Path) -> None:
    import gptcache.utils

    from flowopt.errors import MissingDependencyError

    s = GPTCacheStore(tmp_path / "p")
    s.put(entry("a", vec=1))
    s.put(entry("b", partition="p2", vec=2, tags=("x",)))
    s.close()
    again = GPTCacheStore(tmp_path / "p")
    got = again.get_exact("a")
    assert got is not None and got.chunks == ("answer ", "a")
    assert got.embedding is not None and np.allclose(got.embedding, unit(1), atol=1e-6)
    assert [c.entry.exact_key for c in again.search("p2", unit(2), 3)] == ["b"]
    assert again.stats().detail["vectors"] == 2
    again.close()
    # GPTCache's run-time installer is disarmed: a missing module is a typed error.
    with pytest.raises(MissingDependencyError, match="pip install 'flowopt\\[cache\\]'"):
        gptcache.utils._check_library("surely_not_a_module_xyz")


def test_memory_store_partitions_grow_and_shrink() -> None:
    store = MemoryStore(max_entries=1000)
    for i in range(100):
        store.put(entry(f"k{i}", vec=i))
    for i in range(0, 100, 2):
        store.remove([f"k{i}"])
    hits = store.search("p1", unit(51), 3)
    assert hits[0].entry.exact_key == "k51"
    assert all(int(c.entry.exact_key[1:]) % 2 == 1 for c in hits)
