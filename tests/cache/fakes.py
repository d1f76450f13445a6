"""Fakes for the cache's unit tests (named as fakes; integration tests use the real things).

``FakeEmbedder`` maps a text to a deterministic unit vector built from its words, so texts
sharing words are close and identical texts are identical, without loading a model.
``FakeFailingStore`` raises :class:`StoreError` on every call, like a store whose server is
down.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from flowopt.cache.stores.base import Candidate, Entry, StoreStats
from flowopt.errors import StoreError


class FakeEmbedder:
    dim = 384
    identity = "fake-bag-of-words"

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, text: str) -> npt.NDArray[np.float32]:
        self.calls += 1
        vec = np.zeros(self.dim, dtype=np.float32)
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
            vec[h % self.dim] += 1.0
        norm = float(np.linalg.norm(vec))
        if norm == 0:
            vec[0] = 1.0
            norm = 1.0
        return vec / norm

    def embed_many(self, texts: Sequence[str], batch_size: int = 64) -> npt.NDArray[np.float32]:
        return np.vstack([self.embed(t) for t in texts]) if texts else np.zeros((0, self.dim))


class FakeFailingStore:
    """Every operation fails as if the store's server were down."""

    name = "fake-failing"
    semantic = True
    blocking = True

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self) -> Any:
        self.calls += 1
        raise StoreError("connection refused (fake store is down)")

    def get_exact(self, exact_key: str) -> Entry | None:
        return self._fail()  # type: ignore[no-any-return]

    def search(self, partition: str, vector: Any, k: int) -> list[Candidate]:
        return self._fail()  # type: ignore[no-any-return]

    def put(self, entry: Entry) -> None:
        self._fail()

    def invalidate(self, **kw: Any) -> int:
        return self._fail()  # type: ignore[no-any-return]

    def clear(self) -> int:
        return self._fail()  # type: ignore[no-any-return]

    def stats(self) -> StoreStats:
        return self._fail()  # type: ignore[no-any-return]

    def close(self) -> None:
        return None
