"""The cache's decision core: look up, verify, store. No asyncio, no tracing, no pipeline.

Why a separate engine: the middleware and ``flowopt cache eval`` must take the *same*
decisions, so both call :meth:`CacheEngine.lookup`. The middleware adds the async, span and
streaming plumbing around it; the evaluation adds counting. Nothing about whether a hit is
served lives anywhere else.

A lookup goes:

1. **exact tier**: the exact key (partition + verbatim last user text) in the exact store
   (Redis, when configured), then in the main store;
2. **semantic tier**: embed the last user text, take the ``top_k`` nearest entries *of the
   same partition*, drop those under ``min_cosine``, let the verifier score the rest and
   serve the most probable one if it clears the threshold.

A store failure is never an error for the caller: the lookup reports a miss with
``error`` set, and the middleware records it on the span.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowopt.cache.config import CacheConfig
from flowopt.cache.embedder import Embedder, Vector
from flowopt.cache.keys import CacheKey
from flowopt.cache.stores.base import Candidate, Entry, Store
from flowopt.cache.verifier import Verifier
from flowopt.types import Response, TokenLogprob, Usage

__all__ = [
    "CacheEngine",
    "Checked",
    "Lookup",
    "choose",
    "response_from_entry",
    "response_record",
]


@dataclass(frozen=True, slots=True)
class Checked:
    """One candidate the verifier looked at."""

    candidate: Candidate
    probability: float


@dataclass(slots=True)
class Lookup:
    """The outcome of one lookup. ``entry`` is set when a hit is served."""

    entry: Entry | None = None
    tier: str | None = None
    score: float | None = None
    probability: float | None = None
    verdict: str | None = None
    vector: Vector | None = None
    checked: list[Checked] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    embed_ms: float = 0.0

    @property
    def hit(self) -> bool:
        return self.entry is not None


def choose(checked: Sequence[Checked], threshold: float) -> Checked | None:
    """The candidate to serve: the most probable one, if it reaches ``threshold``.

    Pure so the evaluation can sweep thresholds over recorded lookups and get exactly what
    the middleware would have served at each one.
    """
    best: Checked | None = None
    for c in checked:
        if best is None or c.probability > best.probability:
            best = c
    if best is None or best.probability < threshold:
        return None
    return best


def _error(store: Store | None, exc: BaseException) -> str:
    name = getattr(store, "name", "store")
    return f"{name}: {type(exc).__name__}: {str(exc)[:200]}"


class CacheEngine:
    """Looks up and stores entries according to a :class:`CacheConfig`."""

    def __init__(
        self,
        config: CacheConfig,
        store: Store,
        *,
        exact_store: Store | None = None,
        embedder: Embedder | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        if config.semantic and embedder is None:
            raise ValueError("a semantic cache needs an embedder")
        if config.semantic and config.verify and verifier is None:
            raise ValueError("a verifying cache needs a verifier")
        self.config = config
        self.store = store
        self.exact_store = exact_store
        self.embedder = embedder
        self.verifier = verifier
        if config.verify:
            self.threshold = verifier.threshold if verifier is not None else 1.0
            if config.threshold is not None:
                self.threshold = config.threshold
        else:
            self.threshold = config.threshold if config.threshold is not None else 0.9

    # -- lookup ----------------------------------------------------------------------------
    def lookup_exact(self, key: CacheKey, result: Lookup) -> Entry | None:
        for store in (self.exact_store, self.store):
            if store is None:
                continue
            try:
                entry = store.get_exact(key.exact)
            except Exception as exc:  # a store failure is a miss, never an error
                result.errors.append(_error(store, exc))
                continue
            # Defence in depth: the exact key already contains the partition.
            if entry is not None and entry.partition == key.partition and not entry.expired():
                return entry
        return None

    def lookup(self, key: CacheKey, *, semantic: bool = True) -> Lookup:
        """Find an answer for ``key``: exact tier, then (if enabled) the semantic tier."""
        result = Lookup()
        entry = self.lookup_exact(key, result)
        if entry is not None:
            result.entry, result.tier, result.score = entry, "exact", 1.0
            result.verdict = "exact"
            return result
        if not (semantic and self.config.semantic and self.store.semantic):
            result.verdict = "miss"
            return result
        assert self.embedder is not None
        t0 = time.perf_counter()
        vec = self.embedder.embed(key.text)
        result.embed_ms = (time.perf_counter() - t0) * 1000.0
        result.vector = vec
        try:
            candidates = self.store.search(key.partition, vec, self.config.top_k)
        except Exception as exc:
            result.errors.append(_error(self.store, exc))
            result.verdict = "miss"
            return result
        self._check(key, vec, candidates, result)
        chosen = choose(result.checked, self.threshold)
        if result.checked:
            best = max(result.checked, key=lambda c: c.probability)
            result.score = best.candidate.score
            result.probability = best.probability
        if chosen is None:
            result.verdict = "rejected" if result.checked else "miss"
            return result
        result.entry = chosen.candidate.entry
        result.tier = "semantic"
        result.score = chosen.candidate.score
        result.probability = chosen.probability
        result.verdict = "accepted"
        return result

    def _check(
        self, key: CacheKey, vec: Vector, candidates: list[Candidate], result: Lookup
    ) -> None:
        kept: list[Candidate] = []
        for cand in candidates:
            if cand.entry.partition != key.partition:
                # Defence in depth: stores already search inside one partition.
                result.errors.append("store returned an entry of another partition")
                continue
            if cand.entry.expired() or cand.score < self.config.min_cosine:
                continue
            if self.config.verify and cand.entry.embedding is None:
                continue
            kept.append(cand)
        if not kept:
            return
        if not self.config.verify:
            result.checked.extend(Checked(c, c.score) for c in kept)
            return
        assert self.verifier is not None
        batch = getattr(self.verifier, "probabilities", None)
        texts = [c.entry.question for c in kept]
        vecs = [c.entry.embedding for c in kept if c.entry.embedding is not None]
        if batch is not None:
            probs = batch(key.text, texts, vec, vecs)
        else:
            probs = [
                self.verifier.probability(key.text, t, vec, v)
                for t, v in zip(texts, vecs, strict=True)
            ]
        result.checked.extend(Checked(c, p) for c, p in zip(kept, probs, strict=True))

    # -- store -------------------------------------------------------------------------------
    def make_entry(
        self,
        key: CacheKey,
        response: Response,
        *,
        vector: Vector | None,
        chunks: Sequence[str] | None = None,
        ttl_s: float | None = None,
        tags: Sequence[str] = (),
    ) -> Entry:
        now = time.time()
        ttl = ttl_s if ttl_s is not None else self.config.ttl_s
        return Entry(
            exact_key=key.exact,
            partition=key.partition,
            tenant=key.tenant,
            model_identity=key.model_identity,
            question=key.text,
            text=response.text,
            chunks=tuple(chunks) if chunks is not None else None,
            response=response_record(response),
            tags=tuple(tags),
            created_at=now,
            expires_at=None if ttl is None else now + ttl,
            embedding=vector,
        )

    def put(self, key: CacheKey, entry: Entry) -> list[str]:
        """Store ``entry`` in every configured store; returns the errors (if any)."""
        errors: list[str] = []
        if entry.embedding is None and self.config.semantic and self.embedder is not None:
            entry = _with_embedding(entry, self.embedder.embed(key.text))
        for store in (self.exact_store, self.store):
            if store is None:
                continue
            try:
                store.put(entry)
            except Exception as exc:
                errors.append(_error(store, exc))
        return errors


def _with_embedding(entry: Entry, vec: Vector) -> Entry:
    from dataclasses import replace

    return replace(entry, embedding=np.asarray(vec, dtype=np.float32))


def response_record(response: Response) -> dict[str, Any]:
    """The JSON-ready parts of a response needed to rebuild it on a hit."""
    out: dict[str, Any] = {
        "model": response.model,
        "finish_reason": response.finish_reason,
        "usage": [response.usage.input_tokens, response.usage.output_tokens],
        "backend": response.backend,
        "latency_ms": response.latency_ms,
    }
    if response.logprobs is not None:
        out["logprobs"] = [
            [t.token, t.logprob, [list(x) for x in t.top]] for t in response.logprobs
        ]
    return out


def response_from_entry(entry: Entry) -> Response:
    """Rebuild the stored answer. Usage is zero: a hit spends no backend tokens; the
    original usage is kept in ``metadata['cache']['original_usage']``."""
    rec = entry.response
    logprobs = None
    if "logprobs" in rec:
        logprobs = tuple(
            TokenLogprob(tok, float(lp), tuple((str(a), float(b)) for a, b in top))
            for tok, lp, top in rec["logprobs"]
        )
    usage = rec.get("usage") or [0, 0]
    return Response(
        text=entry.text,
        model=str(rec.get("model") or ""),
        usage=Usage(),
        finish_reason=rec.get("finish_reason", "stop"),
        logprobs=logprobs,
        backend="cache",
        cached=True,
        metadata={
            "cache": {
                "original_usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
                "original_latency_ms": rec.get("latency_ms"),
                "created_at": entry.created_at,
            }
        },
    )
