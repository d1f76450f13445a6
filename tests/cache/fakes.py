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
        # Each word is its own deterministic random direction (seeded by its hash), so two
        # different words are nearly orthogonal instead of colliding in a bucket: with
        # buckets, "9" and "12" shared one and two questions became the same vector.
        vec = np.zeros(self.dim, dtype=np.float32)
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
            vec += np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
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


class FakeScriptedBackend:
    """A fake backend that answers with a fixed :class:`Response` shape: ``finish_reason``,
    ``metadata`` and, for streams, the given ``chunks`` (optionally breaking off after
    ``break_after`` chunks, like a dropped connection)."""

    provider = "fake"

    def __init__(
        self,
        chunks: Sequence[str] = ("Hello", " world", "!"),
        *,
        finish_reason: str = "stop",
        metadata: dict[str, Any] | None = None,
        break_after: int | None = None,
        model: str = "fake-model",
        root: str = "fake/rev1",
    ) -> None:
        self.chunks = list(chunks)
        self.finish_reason = finish_reason
        self.metadata = metadata or {}
        self.break_after = break_after
        self.model = model
        self.root = root
        self.calls = 0

    def endpoint_for_display(self) -> str:
        return "fake://scripted"

    async def model_info(self) -> Any:
        from flowopt.backends.base import ModelInfo

        return ModelInfo(id=self.model, root=self.root)

    async def aclose(self) -> None:
        return None

    async def generate(self, request: Any) -> Any:
        from flowopt.errors import IncompleteStream
        from flowopt.stream import Stream
        from flowopt.types import Chunk, Response, Usage

        self.calls += 1
        text = "".join(self.chunks)
        final = Response(
            text=text,
            model=self.model,
            usage=Usage(3, len(self.chunks)),
            finish_reason=self.finish_reason,
            metadata=self.metadata,
            backend="fake",
        )
        if not request.stream:
            return final
        chunks, limit = self.chunks, self.break_after

        async def gen() -> Any:
            for i, c in enumerate(chunks):
                if limit is not None and i == limit:
                    raise IncompleteStream("connection dropped (fake)", endpoint="fake://")
                last = i == len(chunks) - 1
                yield Chunk(c, i, finish_reason=self.finish_reason if last else None)

        stream = Stream(gen(), lambda: final, endpoint="fake://scripted")
        return Response(text="", model=self.model, finish_reason=None, stream=stream)
