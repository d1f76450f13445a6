"""The semantic answer cache: exact + semantic tiers, a verification stage, strict partitions.

Use it as the ``cache`` middleware::

    flowopt.pipeline("faq", backend={...}, middleware=["cache"], steps=[...])
    # or with options
    middleware=[{"cache": {"store": "memory", "ttl_s": 3600, "scope": "user"}}]

Module map (one idea per module): :mod:`.keys` (partition and exact keys), :mod:`.policy`
(what may be cached; PII), :mod:`.embedder` (MiniLM), :mod:`.features` and
:mod:`.verifier` (the second look), :mod:`.engine` (lookup/store decisions),
:mod:`.middleware` (async, spans, streams), :mod:`.stores` (memory, gptcache, postgres,
redis), :mod:`.evaluation` (``flowopt cache eval``). See ``docs/cache.md``.
"""

from flowopt.cache.config import CacheConfig
from flowopt.cache.engine import CacheEngine, Lookup
from flowopt.cache.keys import CacheKey, cache_key
from flowopt.cache.middleware import CacheMiddleware
from flowopt.cache.policy import PIIDetector, RegexPIIDetector, SkipReason
from flowopt.cache.stores import Entry, MemoryStore, Store, open_store
from flowopt.cache.verifier import LearnedVerifier, Verifier

__all__ = [
    "CacheConfig",
    "CacheEngine",
    "CacheKey",
    "CacheMiddleware",
    "Entry",
    "LearnedVerifier",
    "Lookup",
    "MemoryStore",
    "PIIDetector",
    "RegexPIIDetector",
    "SkipReason",
    "Store",
    "Verifier",
    "cache_key",
    "open_store",
]
