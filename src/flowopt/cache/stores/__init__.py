"""Cache stores, resolved by name through the ``flowopt.stores`` entry-point group.

Built-in names: ``memory``, ``gptcache`` (embedded default), ``postgres`` (shared,
pgvector), ``redis`` (shared exact tier). A plugin registers its own class the same way
and receives the store options as keyword arguments.
"""

from __future__ import annotations

from typing import Any

from flowopt.cache.stores.base import Candidate, Entry, Store, StoreStats
from flowopt.cache.stores.memory import MemoryStore
from flowopt.errors import ConfigError, UnknownNameError

__all__ = ["Candidate", "Entry", "MemoryStore", "Store", "StoreStats", "open_store"]

_BUILTIN = {
    "memory": "flowopt.cache.stores.memory:MemoryStore",
    "gptcache": "flowopt.cache.stores.gptcache:GPTCacheStore",
    "postgres": "flowopt.cache.stores.postgres:PostgresStore",
    "redis": "flowopt.cache.stores.redis:RedisExactStore",
}


def _load_builtin(target: str) -> Any:
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def open_store(name: str, **options: Any) -> Store:
    """Instantiate the store registered under ``name`` with ``options``."""
    from flowopt import registry

    try:
        cls = registry.stores.load(name)
    except UnknownNameError:
        if name not in _BUILTIN:
            raise
        # Running from a source tree whose metadata was not refreshed: fall back to the
        # built-in table so the built-ins still work.
        cls = _load_builtin(_BUILTIN[name])
    store = cls(**options)
    if not isinstance(store, Store):
        raise ConfigError(
            f"store {name!r} ({type(store).__name__}) does not implement the store protocol",
            hint="see flowopt.cache.stores.base.Store",
        )
    return store
