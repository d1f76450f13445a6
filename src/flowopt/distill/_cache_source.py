"""Training candidates from a semantic-cache store.

Why cache entries are good training data: an entry exists only because its answer passed
the cache's policy (greedy or seeded, finished with ``stop``, no tool call, no personal data
by the cache's own detector, not an error) and, when the cache sits above a cascade, it is
the cascade's *final* answer. Why most entries are still refused here: an entry may be used
only if the pipeline that wrote it captured content (:data:`~flowopt.cache._capture.CAPTURE_TAG`);
that is also what keeps the system prompt and earlier turns, which the partition holds only
as a hash.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flowopt.cache._capture import CAPTURE_TAG
from flowopt.cache.stores.base import Entry
from flowopt.distill._messages import plain_messages
from flowopt.distill.errors import DistillError
from flowopt.distill.example import Example

__all__ = ["DEFAULT_CACHE", "entry_example", "read_cache"]

DEFAULT_CACHE = "~/.cache/flowopt/cache"
"""The embedded store's directory when a spec names none (GPTCacheStore's default)."""
_ACCEPTED = (None, "stop", "eos")


def entry_example(entry: Entry) -> Example | str:
    """The example ``entry`` makes, or the reason it makes none."""
    if CAPTURE_TAG not in entry.tags:
        return "no_consent"
    rec = entry.response
    if rec.get("finish_reason") not in _ACCEPTED or not entry.text.strip():
        return "not_accepted"
    context = rec.get("context")
    if not isinstance(context, list):
        return "no_consent"
    messages = plain_messages([*context, {"role": "user", "content": entry.question}])
    if messages is None:
        return "not_plain_chat"
    return Example(
        messages=messages,
        answer=entry.text,
        source="cache",
        tenant=entry.tenant,
        model=str(rec.get("model") or ""),
        created_at=entry.created_at,
    )


def _open(where: str) -> Any:
    if where.startswith(("postgresql://", "postgres://")):
        from flowopt.cache.stores.postgres import PostgresStore

        return PostgresStore(where)
    root = Path(where).expanduser()
    if not (root / "sqlite.db").is_file():
        raise DistillError(
            f"no cache store at {str(root)!r} (no sqlite.db in it)",
            hint="pass the directory the cache's `store_options: {path: ...}` names, "
            "or cache:postgresql://... for the shared store",
        )
    from flowopt.cache.stores.gptcache import GPTCacheStore

    # A bound far above any real store's: opening must never evict what it reads.
    return GPTCacheStore(root, max_entries=10_000_000)


def read_cache(where: str | None) -> Iterator[Example | str]:
    """Every live entry of the store at ``where`` (a directory of the embedded store, or a
    ``postgresql://`` URL; None: the default directory), as an example or a reason."""
    store = _open(where or DEFAULT_CACHE)
    try:
        entries: list[Entry] = store.entries()
    finally:
        store.close()
    for entry in entries:
        yield entry_example(entry)
