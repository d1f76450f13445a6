"""The cache's knobs, one frozen value object with a reason per field.

Why frozen: like LangGraph's ``CachePolicy``, the configuration is a value. A pipeline
built with it cannot have its rules changed underneath running requests.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from flowopt.cache.embedder import EmbedderRuntime
from flowopt.cache.keys import Scope
from flowopt.middleware.options import MiddlewareOptions

__all__ = ["CacheConfig"]


class CacheConfig(MiddlewareOptions):
    """Options of the ``cache`` middleware (all have safe defaults). Short form:
    ``cache: memory`` sets ``store``. A bad value raises ConfigError."""

    store: str = "gptcache"
    """Store name (entry point ``flowopt.stores``): ``gptcache`` (embedded sqlite + faiss,
    persistent), ``memory`` (process-local), ``postgres`` (shared, pgvector)."""

    store_options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options of the store (``path``, ``dsn``...)."""

    exact_store: str | None = None
    """Optional store for the exact tier only, asked first (``redis`` for a shared tier)."""

    exact_store_options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options of the exact store (``url``...)."""

    semantic: bool = True
    """Serve paraphrases. Off: exact tier only (no embedding model is loaded)."""

    embedder_runtime: EmbedderRuntime = "auto"
    """Engine of the default MiniLM embedder: ``onnx`` (onnxruntime over a one-time ONNX
    export, ~2x faster per question), ``torch``, or ``auto`` (onnx when onnxruntime is
    installed, else torch). Both give the same vectors."""

    scope: Scope = "tenant"
    """Who shares answers: everyone in a ``tenant``, or only the same ``user``."""

    ttl_s: float | None = Field(24 * 3600.0, gt=0)
    """Default time to live of an entry; a request may set ``metadata['cache.ttl_s']``."""

    max_entries: int = Field(10_000, ge=1)
    """Size bound of the store; least recently used entries are evicted beyond it."""

    min_cosine: float = Field(0.72, ge=0, le=1)
    """Candidates below this cosine are not even looked at by the verifier (recall bound)."""

    threshold: float | None = None
    """Verifier probability needed to serve a semantic hit. None: the shipped default
    operating point (>= 96% precision on out-of-fold scores of the QQP dev pairs). With
    ``verify=False`` this is a bare cosine cut-off instead."""

    operating_point: str = "default"
    """Named operating point recorded with the verifier weights: ``default`` (``p96``),
    ``strict`` (``p97``), ``lenient`` (``p90``), or any target precision ``pNN`` (``p93``,
    ``p95.5``), read off the calibration curve recorded with the weights."""

    verify: bool = True
    """Run the verification stage. Switching it off is only sensible for benchmarks."""

    top_k: int = Field(4, ge=1)
    """How many nearest entries the verifier examines per lookup."""

    max_temperature: float = Field(0.1, ge=0)
    """Requests sampled above this temperature (without a seed) bypass the cache."""

    pii: bool = True
    """Refuse to store answers (or questions) that contain personal data."""

    pii_patterns: dict[str, str] = Field(default_factory=dict)
    """Extra named regexes for the default PII detector."""

    single_flight: bool = True
    """Concurrent identical misses (same exact key: tenant partition, model, template,
    parameters, text) wait on one engine call and get its answer, marked ``coalesced``
    (:mod:`flowopt.cache._flight`). Per process: with ``--workers N`` up to N calls."""

    replay_chunk_chars: int = 0
    """Chunk size when replaying an answer that was not stored from a stream; 0 replays
    it word by word (the shape of a token stream)."""

    tool_results: Literal["never", "pure"] = "never"
    """Requests whose conversation holds tool results: ``never`` cached (looked up or
    stored), or ``pure``: cached when every result comes from a tool in ``pure_tools``.
    A tool result is data from outside the model (a database, the clock, the web): an
    answer built on it is only safe to repeat when the tool always returns the same
    thing for the same arguments (a calculator, a fixed FAQ)."""

    pure_tools: tuple[str, ...] = ()
    """Names of the tools whose results are a function of their arguments (with
    ``tool_results: pure``); ``["*"]`` declares every tool pure."""

    @model_validator(mode="after")
    def _pure_needs_tools(self) -> CacheConfig:
        if self.tool_results == "pure" and not self.pure_tools:
            raise ValueError(
                "tool_results: pure needs pure_tools (the tool names, or ['*'] for all)"
            )
        return self
