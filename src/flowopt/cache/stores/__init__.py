"""Cache stores, resolved by name through the ``flowopt.stores`` entry-point group.

Built-in names: ``memory``, ``gptcache`` (embedded default), ``postgres`` (shared,
pgvector), ``redis`` (shared exact tier). A plugin registers its own class the same way
and receives the store options as keyword arguments.
"""

from __future__ import annotations

from typing import Any

from flowopt.cache.stores.base import Candidate, Entry, Store, StoreStats
from flowopt.cache.stores.memory import MemoryStore
from flowopt.errors import ConfigError

__all__ = ["Candidate", "Entry", "MemoryStore", "Store", "StoreStats", "open_store"]


def open_store(name: str, **options: Any) -> Store:
    """Instantiate the store registered under ``name`` (the one registry, built-ins
    included) with ``options``."""
    from flowopt import registry

    cls = registry.stores.load(name)
    store = cls(**options)
    if not isinstance(store, Store):
        raise ConfigError(
            f"store {name!r} ({type(store).__name__}) does not implement the store protocol",
            hint="see flowopt.cache.stores.base.Store",
        )
    return store
