"""The memory middleware's knobs: one frozen value object with a reason per field."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowopt.middleware.options import MiddlewareOptions

__all__ = ["MemoryConfig", "Scope"]

Scope = Literal["user", "agent", "run"]


class MemoryConfig(MiddlewareOptions):
    """Options of the ``memory`` middleware. Both parts are off until asked for:
    ``working_tokens`` turns on working memory, ``long_term: true`` turns on Mem0."""

    working_tokens: int | None = Field(None, ge=1)
    """Token budget of the conversation sent per step (static prompt included). None:
    no trimming. The current turn is always kept, even over budget."""

    long_term: bool = False
    """Recall the user's memories before the call and extract new ones after it (Mem0)."""

    data_dir: str | None = None
    """Where the embedded store lives (qdrant on disk, Mem0's sqlite history, the
    extraction queue). None: ``$FLOWOPT_MEMORY_DIR`` or ``~/.cache/flowopt/memory``."""

    postgres_url: str | None = None
    """Keep the vectors in pgvector on this Postgres (``postgresql://...``) instead of the
    embedded qdrant, so several processes or hosts share one store. Mem0's change history
    stays in sqlite under ``data_dir``."""

    collection: str = "flowopt_memory"
    """Vector collection name (one per app keeps apps apart)."""

    llm_base_url: str | None = None
    """OpenAI-compatible server Mem0 extracts with. None: the pipeline's own backend."""

    llm_model: str | None = None
    """Model name on that server. None: the pipeline backend's model."""

    scope: Scope = "user"
    """Which memories a request recalls and writes: the ``user``'s (across sessions), the
    ``agent``'s (``metadata['memory.agent']``) or this ``run``'s (``metadata['memory.run']``,
    one session). The tenant is always part of the key."""

    top_k: int = Field(10, ge=1, le=100)
    """How many memories recall injects at most."""

    recall_tokens: int = Field(400, ge=1)
    """Token budget of the injected memory block; lower-ranked memories are cut first."""

    min_score: float = Field(0.1, ge=0, le=1)
    """Memories scoring below this are not injected."""

    recall_timeout_s: float = Field(0.5, gt=0)
    """Recall slower than this is abandoned (answered without memories, recorded)."""

    extractor: Literal["compact", "mem0", "none"] = "compact"
    """``compact``: flowopt's short extraction prompt (static part first, ~300 tokens),
    then Mem0 stores the facts. ``mem0``: Mem0's own ``add(infer=True)`` (~7.7k-token
    prompt; needs a model with that much context). ``none``: no LLM extraction (with
    ``episodic``: turns only)."""

    episodic: bool = False
    """Also keep each turn verbatim as an episode (embedding only, no LLM call; PII-flagged
    turns are not kept). Recall then ranks facts and episodes together: an exact past
    statement is found even when extraction missed it. Costs one vector per turn."""

    debounce_s: float = Field(2.0, ge=0)
    """A conversation is extracted once it has been quiet this long (a burst of turns is
    extracted once)."""

    max_pending: int = Field(1000, ge=1)
    """Bound of the extraction queue; beyond it new turns are shed (and counted), never
    the request."""

    extract_per_minute: float | None = Field(None, gt=0)
    """At most this many extraction calls a minute (the LLM budget of memory). None: no cap.
    Turns wait in the queue meanwhile (bounded by ``max_pending``)."""

    defer_at_in_flight: int | None = Field(4, ge=1)
    """Extraction waits while this process answers at least this many requests through the
    middleware: answers first, memory is the first thing shed under load. None: never wait."""

    allow_pii: bool = False
    """Store facts that the PII detectors flag. Off: they are never stored."""
