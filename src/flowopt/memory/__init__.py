"""Memory: working memory (a conversation kept within a token budget without breaking it)
and long-term memory (Mem0: recall before the call, extraction after it, off the request
path). See docs/memory.md.

The heavy part (Mem0, qdrant, the embedder) is imported only when long-term memory is
used; ``pip install 'flowopt[memory]'`` installs it.
"""

from __future__ import annotations

from flowopt.memory.config import MemoryConfig
from flowopt.memory.extract import SYSTEM_PROMPT as EXTRACTION_PROMPT
from flowopt.memory.extract import Turn
from flowopt.memory.middleware import MemoryMiddleware, render_block
from flowopt.memory.store import LongTermStore, MemoryKey, Recalled, default_data_dir
from flowopt.memory.working import TrimResult, approx_tokens, trim_history

__all__ = [
    "EXTRACTION_PROMPT",
    "LongTermStore",
    "MemoryConfig",
    "MemoryKey",
    "MemoryMiddleware",
    "Recalled",
    "TrimResult",
    "Turn",
    "approx_tokens",
    "default_data_dir",
    "forget",
    "render_block",
    "trim_history",
]


def forget(
    *,
    tenant: str,
    user: str | None = None,
    agent: str | None = None,
    run: str | None = None,
    data_dir: str | None = None,
    collection: str = "flowopt_memory",
    postgres_url: str | None = None,
) -> int:
    """Forget a user's (agent's, run's) memories in the store under ``data_dir`` (vectors
    in pgvector when ``postgres_url`` is given): removed from the vector store and from
    Mem0's history. Returns how many were deleted."""
    store = LongTermStore(
        data_dir or default_data_dir(),
        llm_base_url=None,
        llm_model=None,
        collection=collection,
        postgres_url=postgres_url,
    )
    try:
        return store.forget(MemoryKey(tenant, user, agent, run))
    finally:
        store.close()
