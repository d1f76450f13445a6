"""The cache's knobs, one frozen value object with a reason per field.

Why frozen: like LangGraph's ``CachePolicy``, the configuration is a value. A pipeline
built with it cannot have its rules changed underneath running requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowopt.cache.embedder import RUNTIMES, EmbedderRuntime
from flowopt.cache.keys import Scope
from flowopt.errors import ConfigError

__all__ = ["CacheConfig"]


@dataclass(frozen=True)
class CacheConfig:
    """Options of the ``cache`` middleware (all have safe defaults)."""

    store: str = "gptcache"
    """Store name (entry point ``flowopt.stores``): ``gptcache`` (embedded sqlite + faiss,
    persistent), ``memory`` (process-local), ``postgres`` (shared, pgvector)."""

    store_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the store (``path``, ``dsn``...)."""

    exact_store: str | None = None
    """Optional store for the exact tier only, asked first (``redis`` for a shared tier)."""

    exact_store_options: dict[str, Any] = field(default_factory=dict)

    semantic: bool = True
    """Serve paraphrases. Off: exact tier only (no embedding model is loaded)."""

    embedder_runtime: EmbedderRuntime = "auto"
    """Engine of the default MiniLM embedder: ``onnx`` (onnxruntime over a one-time ONNX
    export, ~2x faster per question), ``torch``, or ``auto`` (onnx when onnxruntime is
    installed, else torch). Both give the same vectors."""

    scope: Scope = "tenant"
    """Who shares answers: everyone in a ``tenant``, or only the same ``user``."""

    ttl_s: float | None = 24 * 3600.0
    """Default time to live of an entry; a request may set ``metadata['cache.ttl_s']``."""

    max_entries: int = 10_000
    """Size bound of the store; least recently used entries are evicted beyond it."""

    min_cosine: float = 0.72
    """Candidates below this cosine are not even looked at by the verifier (recall bound)."""

    threshold: float | None = None
    """Verifier probability needed to serve a semantic hit. None: the shipped default
    operating point (>= 95% precision on the calibration split of the dev pairs). With
    ``verify=False`` this is a bare cosine cut-off instead."""

    operating_point: str = "default"
    """Named operating point recorded with the verifier weights (``default``, ``p99``)."""

    verify: bool = True
    """Run the verification stage. Switching it off is only sensible for benchmarks."""

    top_k: int = 4
    """How many nearest entries the verifier examines per lookup."""

    max_temperature: float = 0.1
    """Requests sampled above this temperature (without a seed) bypass the cache."""

    pii: bool = True
    """Refuse to store answers (or questions) that contain personal data."""

    pii_patterns: dict[str, str] = field(default_factory=dict)
    """Extra named regexes for the default PII detector."""

    replay_chunk_chars: int = 0
    """Chunk size when replaying an answer that was not stored from a stream; 0 replays
    it word by word (the shape of a token stream)."""

    def __post_init__(self) -> None:
        if self.scope not in ("tenant", "user"):
            raise ConfigError(
                f"cache scope must be 'tenant' or 'user', got {self.scope!r}",
                hint="scope: tenant shares answers within a tenant; user within one user",
            )
        if self.embedder_runtime not in RUNTIMES:
            raise ConfigError(
                f"cache embedder_runtime must be auto, onnx or torch, got "
                f"{self.embedder_runtime!r}",
                hint="auto uses onnxruntime when it is installed, else torch",
            )
        if self.ttl_s is not None and self.ttl_s <= 0:
            raise ConfigError("cache ttl_s must be positive", hint="omit it to keep 24 h")
        if self.max_entries < 1:
            raise ConfigError("cache max_entries must be >= 1", hint="e.g. max_entries: 10000")
        if not 0.0 <= self.min_cosine <= 1.0:
            raise ConfigError("cache min_cosine must be in [0, 1]", hint="e.g. 0.72")
        if self.top_k < 1:
            raise ConfigError("cache top_k must be >= 1", hint="e.g. top_k: 4")
        if self.max_temperature < 0:
            raise ConfigError("cache max_temperature must be >= 0", hint="default 0.1")
