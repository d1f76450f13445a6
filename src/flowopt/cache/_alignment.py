"""Word-alignment features: which words a pair does *not* share, and how topical they are.

Why: a reworded sentence and a changed fact both leave words unmatched, but different
ones. A paraphrase swaps common words ("host" / "serve as a repository"); a QQP
non-duplicate usually swaps one topical word ("Java" / "Python") or a question word. The
MiniLM tokenizer's vocabulary is an offline frequency proxy: BERT's WordPiece vocabulary
lists whole words roughly by corpus frequency, and a word that is not in it at all is
split into pieces, i.e. rare. So the rank of an unmatched word says how much it carries.

Pure Python over :class:`~flowopt.cache._features.TextInfo`; the vocabulary is read once
from the packaged model (``vocab.txt``), a few tens of microseconds per pair after that.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

from flowopt.cache._features import STOPWORDS, TextInfo, _stem

__all__ = ["ALIGN_FEATURES", "align_features"]

_OOV = 40_000
"""Rank given to a word the vocabulary does not hold whole (rarer than any listed word)."""
_COMMON = 3_000
"""Ranks at or below this are everyday words (BERT's whole words start at ~2,000)."""

ALIGN_FEATURES: tuple[str, ...] = (
    "unmatched_rare_min",
    "unmatched_rare_max",
    "unmatched_common_max",
    "unmatched_logrank_max",
    "unmatched_logrank_min_side",
    "unmatched_logrank_mean",
    "unmatched_share_max",
    "unmatched_oov_any",
    "matched_logrank_mean",
    "question_a",
    "question_b",
)


@lru_cache(maxsize=1)
def _vocab() -> dict[str, int]:
    from flowopt.cache.embedder import minilm_path

    words = (Path(minilm_path()) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return {w: i for i, w in enumerate(words) if not w.startswith(("[", "##"))}


def _rank(word: str) -> int:
    return _vocab().get(word, _OOV)


def _unmatched(a: TextInfo, b: TextInfo) -> list[str]:
    """Content tokens of ``a`` whose stem ``b`` lacks (raw forms, for the vocabulary)."""
    seen: set[str] = set()
    out = []
    for t in a.tokens:
        if t in STOPWORDS or not t.isalnum() or t in seen:
            continue
        seen.add(t)
        if _stem(t) not in b.content:
            out.append(t)
    return out


def _is_question(info: TextInfo) -> bool:
    return bool(info.tokens) and (info.tokens[-1] == "?" or info.first in info.qwords)


def align_features(a: TextInfo, b: TextInfo) -> list[float]:
    """The features, in :data:`ALIGN_FEATURES` order."""
    ua, ub = _unmatched(a, b), _unmatched(b, a)
    ra = [_rank(w) for w in ua]
    rb = [_rank(w) for w in ub]
    rare_a = sum(1 for r in ra if r > _COMMON)
    rare_b = sum(1 for r in rb if r > _COMMON)
    common_a, common_b = len(ra) - rare_a, len(rb) - rare_b
    lr = [math.log(r) for r in ra + rb]
    max_a = max((math.log(r) for r in ra), default=0.0)
    max_b = max((math.log(r) for r in rb), default=0.0)
    na, nb = max(1, len(a.content)), max(1, len(b.content))
    matched = [
        math.log(_rank(t))
        for t in a.tokens
        if t not in STOPWORDS and t.isalnum() and _stem(t) in b.content
    ]
    return [
        float(min(rare_a, rare_b, 6)),
        float(min(max(rare_a, rare_b), 6)),
        float(min(max(common_a, common_b), 8)),
        max(max_a, max_b),
        min(max_a, max_b),
        sum(lr) / len(lr) if lr else 0.0,
        max(len(ua) / na, len(ub) / nb),
        1.0 if any(r == _OOV for r in ra + rb) else 0.0,
        sum(matched) / len(matched) if matched else 0.0,
        1.0 if _is_question(a) else 0.0,
        1.0 if _is_question(b) else 0.0,
    ]
