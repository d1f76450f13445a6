"""Fact-changing rewrites of a paraphrase: the negatives a verifier needs besides QQP's.

Why: QQP's non-duplicates are short questions on the same topic that differ in a word; a
verifier fitted on them alone learns "any reworded content word means a different
question" and refuses plain paraphrases of longer statements (7.8% served). Adding the
paraphrases as positives alone would teach the opposite shortcut ("a long, reworded
sentence is always the same"). These rewrites keep the paraphrase's wording and change one
*fact*: a name or code identifier, a number, a negation, a word for its antonym, or one
content word for another sentence's. A pair (original, rewrite) is a labelled negative, so
the model must look at facts, not at length, topic or style.

Training-time only (``scripts/train_cache_verifier.py``); deterministic given the seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from flowopt.cache._features import ANTONYMS, STOPWORDS

__all__ = ["DEFAULT_KINDS", "KINDS", "fact_changes"]

KINDS: tuple[str, ...] = ("entity", "number", "negation", "antonym", "content")
"""The kinds of fact change :func:`fact_changes` can make."""

DEFAULT_KINDS: tuple[str, ...] = ("entity", "number", "negation", "antonym")
"""What training uses. ``content`` (one content word for another sentence's) is left out:
a reworded sentence already differs in several content words, so one more is invisible to
the features, and those rewrites taught the model to refuse paraphrases (recall 0.18 on
held-out paraphrases at the lenient point)."""

_CODE = re.compile(r"`[^`]+`")
_NAME = re.compile(r"(?<=[a-z,;:] )[A-Z][A-Za-z0-9]+(?: [A-Z][A-Za-z0-9]+)*")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
_AUX = re.compile(
    r"\b(is|are|was|were|can|could|does|do|did|will|should|must|may|has|have)\b(?! not)"
)
_NOT = re.compile(r"\b(not|never) ")
_WORD = re.compile(r"\b[a-z]{5,}\b")
_ANTONYM_OF: dict[str, str] = {}
# Sorted: a word with two antonyms ("increase") must get the same one in every process
# (set order changes with PYTHONHASHSEED), or training is not reproducible.
for _x, _y in sorted(tuple(sorted(pair)) for pair in ANTONYMS):
    _ANTONYM_OF.setdefault(_x, _y)
    _ANTONYM_OF.setdefault(_y, _x)


def _names(text: str) -> list[str]:
    return _CODE.findall(text) + _NAME.findall(text)


def _swap_entity(text: str, pool: Sequence[str], rng: random.Random) -> str | None:
    found = _names(text)
    if not found or not pool:
        return None
    old = rng.choice(found)
    same_kind = [
        p
        for p in pool
        if p.startswith("`") == old.startswith("`") and p not in old and old not in p
    ]
    if not same_kind:
        return None
    return text.replace(old, rng.choice(same_kind))


def _change_number(text: str, rng: random.Random) -> str | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    old = rng.choice(found)
    value = float(old)
    new = value * rng.choice((2, 3, 10)) + rng.choice((1, 2, 5)) if value else 1
    new_text = str(int(new)) if float(new).is_integer() else f"{new:g}"
    return re.sub(rf"\b{re.escape(old)}\b", new_text, text, count=1)


def _negate(text: str) -> str | None:
    if _NOT.search(text):
        return _NOT.sub("", text, count=1)
    match = _AUX.search(text)
    if match is None:
        return None
    return text[: match.end()] + " not" + text[match.end() :]


def _antonym(text: str, rng: random.Random) -> str | None:
    words = [w for w in re.findall(r"\b[a-z]{4,}\b", text) if w in _ANTONYM_OF]
    if not words:
        return None
    old = rng.choice(words)
    return re.sub(rf"\b{old}\b", _ANTONYM_OF[old], text, count=1)


def _swap_content(text: str, pool: Sequence[str], rng: random.Random) -> str | None:
    words = [w for w in _WORD.findall(text) if w not in STOPWORDS]
    if not words or not pool:
        return None
    old = rng.choice(words)
    # Same ending (a plural for a plural, "-ing" for "-ing") keeps the rewrite fluent.
    alike = [w for w in pool if w[-2:] == old[-2:] and w != old]
    if not alike:
        return None
    new = rng.choice(alike)
    return re.sub(rf"\b{old}\b", new, text, count=1)


def fact_changes(
    texts: Sequence[str],
    *,
    seed: int = 0,
    per_text: int = 2,
    kinds: Sequence[str] = DEFAULT_KINDS,
) -> list[tuple[int, str, str]]:
    """Up to ``per_text`` fact-changing rewrites of each text: ``(index, kind, rewrite)``.

    Names, code identifiers and content words are drawn from the *other* texts, so a
    rewrite is fluent but states something else.
    """
    rng = random.Random(seed)
    pool_names = sorted({n for t in texts for n in _names(t)})
    pool_words = sorted({w for t in texts for w in _WORD.findall(t) if w not in STOPWORDS})
    out: list[tuple[int, str, str]] = []
    for i, text in enumerate(texts):
        order = list(kinds)
        rng.shuffle(order)
        made = 0
        for kind in order:
            if made >= per_text:
                break
            if kind == "entity":
                new = _swap_entity(text, pool_names, rng)
            elif kind == "number":
                new = _change_number(text, rng)
            elif kind == "negation":
                new = _negate(text)
            elif kind == "antonym":
                new = _antonym(text, rng)
            else:
                new = _swap_content(text, pool_words, rng)
            if new is not None and new != text:
                out.append((i, kind, new))
                made += 1
    return out
