"""``flowopt distill export``: accepted answers in, a chat fine-tuning set and its held-out
split out.

The steps, each with the reason it drops a record (counted in :class:`ExportReport`):

1. **read** every source (``cache``, ``batch``): only content kept with consent
   (``no_consent``), answers that were accepted (``not_accepted``), plain text chat
   (``not_plain_chat``, ``not_chat``, ``no_request``);
2. **filter**: answered since ``since`` (``too_old``), by the wanted tenants
   (``other_tenant``) and models, the strong tier (``other_model``);
3. **no personal data**: any text in which the cache's detector finds an e-mail address,
   phone, card or national id number drops the whole example (``pii``): redacting would
   teach the student to write placeholders;
4. **deduplicate** by normalised prompt, keeping the newest answer (``duplicate``);
5. **split** by a hash of the normalised prompt (:func:`~flowopt.distill.example.holdout_side`).

Both files are written whole or not at all (a temporary file renamed into place).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flowopt.cache.policy import RegexPIIDetector
from flowopt.distill._batch_source import read_batch
from flowopt.distill._cache_source import read_cache
from flowopt.distill.errors import DistillError, NothingToExportError
from flowopt.distill.example import Example, holdout_side, prompt_key

__all__ = ["DEFAULT_SOURCES", "ExportReport", "export", "holdout_path"]

DEFAULT_SOURCES = ("cache", "batch")
_KINDS = ("cache", "batch")


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What an export wrote and why the rest was dropped (reason -> count)."""

    train: int
    holdout: int
    train_path: Path
    holdout_path: Path | None
    read: int
    dropped: Mapping[str, int] = field(default_factory=dict)
    skipped_sources: tuple[str, ...] = ()


def holdout_path(out: Path) -> Path:
    """Where the held-out split goes by default: ``train.jsonl`` -> ``train.holdout.jsonl``."""
    return out.with_name(out.name.removesuffix(".jsonl") + ".holdout.jsonl")


def _parse(source: str) -> tuple[str, str | None]:
    kind, _, where = source.partition(":")
    if kind not in _KINDS:
        raise DistillError(
            f"unknown source {source[:60]!r}",
            hint="use cache, cache:DIR, cache:postgresql://..., batch, batch:FILE or "
            "batch:postgresql://...",
        )
    return kind, where or None


def _read(sources: Sequence[str], since: float) -> tuple[list[Example | str], list[str]]:
    """Every candidate of every source. A named store that is missing is an error; with
    the default sources a missing one is skipped (named in the report) unless all are."""
    defaults = not sources
    items: list[Example | str] = []
    skipped: list[str] = []
    errors: list[DistillError] = []
    for source in sources or DEFAULT_SOURCES:
        kind, where = _parse(source)
        try:
            found = read_cache(where) if kind == "cache" else read_batch(where, since)
            items.extend(found)
        except DistillError as exc:
            if not defaults:
                raise
            skipped.append(source)
            errors.append(exc)
    if defaults and len(skipped) == len(DEFAULT_SOURCES):
        raise DistillError(
            "no store to export from: " + "; ".join(e.message for e in errors),
            hint="name the stores with --source cache:DIR / batch:FILE (see docs/distill.md)",
        )
    return items, skipped


def _keep(
    items: Iterable[Example | str],
    drops: Counter[str],
    *,
    since: float,
    tenants: frozenset[str],
    models: frozenset[str],
    detector: RegexPIIDetector,
) -> Iterator[Example]:
    for item in items:
        if isinstance(item, str):
            drops[item] += 1
        elif item.created_at < since:
            drops["too_old"] += 1
        elif tenants and (item.tenant or "-") not in tenants:
            drops["other_tenant"] += 1
        elif models and item.model not in models:
            drops["other_model"] += 1
        elif any(detector.detect(t) for t in item.texts()):
            drops["pii"] += 1
        else:
            yield item


def _write(path: Path, examples: Sequence[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.record(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def export(
    out: str | os.PathLike[str],
    *,
    since: float,
    sources: Sequence[str] = (),
    holdout: float = 0.1,
    holdout_out: str | os.PathLike[str] | None = None,
    tenants: Iterable[str] = (),
    models: Iterable[str] = (),
    pii_patterns: Mapping[str, str] | None = None,
) -> ExportReport:
    """Write the training set to ``out`` and (``holdout`` > 0) the held-out split next to
    it; see the module docstring for what is kept. Raises :class:`DistillError` for bad
    arguments or a missing store, :class:`NothingToExportError` when nothing is left."""
    if not 0.0 <= holdout < 1.0:
        raise DistillError(
            f"--holdout must be at least 0 and below 1, got {holdout}",
            hint="the share of prompts held out for evaluation, e.g. 0.1",
        )
    items, skipped = _read(sources, since)
    drops: Counter[str] = Counter()
    kept = _keep(
        items,
        drops,
        since=since,
        tenants=frozenset(tenants),
        models=frozenset(models),
        detector=RegexPIIDetector(dict(pii_patterns or {})),
    )
    newest: dict[str, Example] = {}
    for ex in kept:
        key = prompt_key(ex.messages)
        old = newest.get(key)
        if old is not None:
            drops["duplicate"] += 1
            if old.created_at > ex.created_at:
                continue
        newest[key] = ex
    if not newest:
        why = ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "no records"
        raise NothingToExportError(
            f"nothing to export from {len(items)} records ({why})",
            hint="no_consent: the pipeline must capture content (capture_content: true) or "
            "the batch carry metadata distill=allow; too_old: an earlier --since",
        )
    ordered = sorted(newest.items(), key=lambda kv: (kv[1].created_at, kv[0]))
    train = [ex for key, ex in ordered if not holdout_side(key, holdout)]
    held = [ex for key, ex in ordered if holdout_side(key, holdout)]
    out_path = Path(out)
    held_path = Path(holdout_out) if holdout_out is not None else holdout_path(out_path)
    _write(out_path, train)
    if holdout > 0:
        _write(held_path, held)
    return ExportReport(
        train=len(train),
        holdout=len(held),
        train_path=out_path,
        holdout_path=held_path if holdout > 0 else None,
        read=len(items),
        dropped=dict(drops),
        skipped_sources=tuple(skipped),
    )
