"""Pair features for the verification stage: is a cached question the *same* question?

Why hand-written features on top of the embedding: cosine similarity of sentence embeddings
measures topic, not intent. "How do I minimize stray loss?" and "What is a stray loss?" sit
close together in embedding space, and so do "Is 7 prime?" and "Is 9 prime?". The
differences that matter are small and lexical: a question word, a negation, a number, a
named entity, an extra content word. These features make those differences visible to a
small learned model (:mod:`flowopt.cache.verifier`), which is trained by
``scripts/train_cache_verifier.py`` on the dev pairs file only.

Everything here is pure Python + numpy and costs a few tens of microseconds per pair, so
the verifier adds nothing noticeable to a lookup that already pays for one embedding.
The same function computes features at training time and at serving time: one code path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = [
    "HAND_FEATURES",
    "TextInfo",
    "hand_features",
    "pair_vector",
    "text_info",
    "vetoed",
]


def _words(text: str) -> frozenset[str]:
    """A word list written as one string (keeps the lists readable)."""
    return frozenset(text.split())


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CAP = re.compile(r"\b[A-Z][a-zA-Z0-9]+(?:\s+[A-Z][a-zA-Z0-9]+)*")
# Code identifiers: a backticked span, a dotted name (``datasets.Audio``), a snake_case
# name, or a call (``list_datasets()``).
_CODE = re.compile(r"`([^`]+)`|\b([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)|\b(\w*_\w+)\b|\b(\w+)\(\)")

QUESTION_WORDS = _words(
    "what how why when where who whom whose which can could should would will is are "
    "do does did was were has have "
)
NEGATIONS = _words(
    "not no never without nor none cannot can't don't doesn't didn't isn't aren't "
    "wasn't weren't won't wouldn't shouldn't couldn't "
)
STOPWORDS = _words(
    "a an the of to in on for and or with at by from as is are was were be been being "
    "do does did i you he she it we they me my your our their his her its this that "
    "these those there here what how why when where who whom which can could should "
    "would will shall may might must have has had if so than then into about over "
    "under up down out some any all get got one s t just very more most much many "
    "also ? . , ! ' \" ( ) : ; - "
)
COMPARATIVES = _words("best worst better worse most least top first last")
ANTONYMS: frozenset[frozenset[str]] = frozenset(
    frozenset(pair.split("/"))
    for pair in _words(
        "minimize/maximize min/max increase/decrease increase/reduce rise/fall gain/lose "
        "buy/sell before/after start/stop start/end begin/end pros/cons "
        "advantage/disadvantage advantages/disadvantages best/worst good/bad better/worse "
        "more/less most/least high/low higher/lower up/down in/out on/off open/close "
        "positive/negative true/false right/wrong easy/hard easy/difficult "
        "cheap/expensive old/new young/old male/female man/woman men/women boy/girl "
        "boys/girls husband/wife love/hate like/dislike win/lose won/lost pass/fail "
        "import/export inside/outside import/importing hot/cold fast/slow big/small "
        "large/small long/short rich/poor past/future first/last legal/illegal "
        "possible/impossible safe/unsafe always/never all/none add/remove upload/download "
        "send/receive give/take push/pull north/south east/west "
    )
)
DEICTIC = _words("this these that those above below attached following")
NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "billion": "1000000000",
}
_NEG_SUFFIX = "n't"


@dataclass(frozen=True, slots=True)
class TextInfo:
    """What the features need to know about one question, computed once per text."""

    tokens: tuple[str, ...]
    content: frozenset[str]
    qwords: frozenset[str]
    first: str
    negations: int
    numbers: frozenset[str]
    entities: frozenset[str]
    trigrams: frozenset[str]
    comparatives: frozenset[str]
    n_chars: int
    order: tuple[str, ...]
    deictic: bool
    codes: frozenset[str]
    text: str


def _stem(word: str) -> str:
    """A crude suffix strip, enough to match 'learn'/'learning'/'learns' as one word."""
    for suffix in ("ing", "ies", "es", "ed", "ly", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


@lru_cache(maxsize=65536)
def text_info(text: str) -> TextInfo:
    """Tokenise and summarise one text (cached: the cached side repeats across lookups)."""
    raw_tokens = _WORD.findall(text)
    tokens = tuple(t.lower() for t in raw_tokens)
    content = frozenset(_stem(t) for t in tokens if t not in STOPWORDS and t.isalnum())
    qwords = frozenset(t for t in tokens if t in QUESTION_WORDS)
    negations = sum(1 for t in tokens if t in NEGATIONS or t.endswith(_NEG_SUFFIX))
    numbers = frozenset(
        [n.replace(",", "") for n in _NUMBER.findall(text)]
        + [NUMBER_WORDS[t] for t in tokens if t in NUMBER_WORDS and t != "one"]
    )
    order = tuple(_stem(t) for t in tokens if t not in STOPWORDS and t.isalnum())
    deictic = any(
        t in DEICTIC and i + 1 < len(tokens) and tokens[i + 1] not in STOPWORDS
        for i, t in enumerate(tokens)
    )
    entities: set[str] = set()
    for match in _CAP.finditer(text):
        start = match.start()
        # A capital word at the start of the text or of a sentence is not a name.
        if start == 0 or text[:start].rstrip()[-1:] in ".?!":
            words = match.group(0).split()
            if len(words) > 1:
                entities.add(" ".join(words[1:]).lower())
            continue
        entities.add(match.group(0).lower())
    squashed = " " + " ".join(tokens) + " "
    trigrams = frozenset(squashed[i : i + 3] for i in range(max(0, len(squashed) - 2)))
    codes = frozenset(
        c
        for m in _CODE.finditer(text)
        if (c := next(g for g in m.groups() if g is not None).strip().removesuffix("()"))
    )
    return TextInfo(
        tokens=tokens,
        content=content,
        qwords=qwords,
        first=tokens[0] if tokens else "",
        negations=negations,
        numbers=numbers,
        entities=frozenset(entities),
        trigrams=trigrams,
        comparatives=frozenset(t for t in tokens if t in COMPARATIVES),
        n_chars=len(text),
        order=order,
        deictic=deictic,
        codes=codes,
        text=text,
    )


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


HAND_FEATURES: tuple[str, ...] = (
    "cos",
    "cos_sq",
    "token_jaccard",
    "content_jaccard",
    "content_only_a",
    "content_only_b",
    "content_diff_min",
    "content_diff_max",
    "trigram_jaccard",
    "first_word_match",
    "qword_jaccard",
    "qword_mismatch",
    "negation_mismatch",
    "number_mismatch",
    "has_numbers",
    "entity_mismatch",
    "entity_only",
    "comparative_mismatch",
    "len_ratio",
    "log_len_diff",
    "token_len_ratio",
    "exact_lower",
    "order_discordance",
    "swap",
    "antonym",
    "deictic_any",
    "deictic_both",
    "unmatched_edit_max",
    "unmatched_len_max",
    "unmatched_digit",
    "code_mismatch",
)

_CODE_MISMATCH = HAND_FEATURES.index("code_mismatch")


def _code_mismatch(a: TextInfo, b: TextInfo) -> bool:
    """A code identifier on one side that the other side's text does not contain
    (``list_datasets()`` / ``load_dataset()``): an answer about one API is not an answer
    about another, however alike the sentences read. Containment, not equality, so that
    dropping the backticks or the call parentheses is not a change."""
    return any(c not in b.text for c in a.codes) or any(c not in a.text for c in b.codes)


def vetoed(features: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Rows of a feature matrix that must never be served, whatever the model says.

    Why a rule and not only a feature: the fact-change rewrites the model learns from hold
    few code swaps, and one swapped identifier is always a different question."""
    out: npt.NDArray[np.bool_] = features[:, _CODE_MISMATCH] > 0
    return out


def _discordance(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    """Share of shared-word pairs whose order differs ("cats fear tigers" vs "tigers fear
    cats"): 0 when the shared words appear in the same order."""
    pos_b: dict[str, int] = {}
    for i, w in enumerate(b):
        pos_b.setdefault(w, i)
    seq = []
    seen: set[str] = set()
    for w in a:
        if w in pos_b and w not in seen:
            seen.add(w)
            seq.append(pos_b[w])
    n = len(seq)
    if n < 2:
        return 0.0
    bad = sum(1 for i in range(n) for j in range(i + 1, n) if seq[i] > seq[j])
    return bad / (n * (n - 1) / 2)


def _edit_sim(a: str, b: str) -> float:
    """Similarity of two words from their longest common prefix and suffix (cheap)."""
    if not a or not b:
        return 0.0
    n = min(len(a), len(b))
    pre = 0
    while pre < n and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < n - pre and a[-1 - suf] == b[-1 - suf]:
        suf += 1
    return (pre + suf) / max(len(a), len(b))


def hand_features(a: TextInfo, b: TextInfo, cos: float) -> list[float]:
    """The interpretable features, in :data:`HAND_FEATURES` order."""
    only_a = len(a.content - b.content)
    only_b = len(b.content - a.content)
    ent_sym = a.entities ^ b.entities
    # A name only one side capitalises ("France" / "france") is not a different name.
    ent_unmatched = any(
        not set(e.split()) <= set(other.tokens)
        for e, other in [(e, b) for e in a.entities - b.entities]
        + [(e, a) for e in b.entities - a.entities]
    )
    la, lb = max(a.n_chars, 1), max(b.n_chars, 1)
    ta, tb = max(len(a.tokens), 1), max(len(b.tokens), 1)
    disc = _discordance(a.order, b.order)
    ua, ub = a.content - b.content, b.content - a.content
    unmatched = ua | ub
    antonym = any(frozenset((x, y)) in ANTONYMS for x in ua for y in ub)
    edit_max = max((_edit_sim(x, y) for x in ua for y in ub), default=0.0)
    len_max = max((len(w) for w in unmatched), default=0)
    return [
        cos,
        cos * cos,
        _jaccard(frozenset(a.tokens), frozenset(b.tokens)),
        _jaccard(a.content, b.content),
        float(min(only_a, 6)),
        float(min(only_b, 6)),
        float(min(only_a, only_b, 6)),
        float(min(max(only_a, only_b), 6)),
        _jaccard(a.trigrams, b.trigrams),
        1.0 if a.first == b.first else 0.0,
        _jaccard(a.qwords, b.qwords),
        1.0 if a.qwords != b.qwords else 0.0,
        1.0 if (a.negations > 0) != (b.negations > 0) else 0.0,
        1.0 if a.numbers != b.numbers else 0.0,
        1.0 if (a.numbers or b.numbers) else 0.0,
        1.0 if ent_unmatched else 0.0,
        float(min(len(ent_sym), 4)),
        1.0 if a.comparatives != b.comparatives else 0.0,
        min(la, lb) / max(la, lb),
        abs(float(np.log(la / lb))),
        min(ta, tb) / max(ta, tb),
        1.0 if a.tokens == b.tokens else 0.0,
        disc,
        1.0 if (a.content == b.content and disc > 0) else 0.0,
        1.0 if antonym else 0.0,
        1.0 if (a.deictic or b.deictic) else 0.0,
        1.0 if (a.deictic and b.deictic) else 0.0,
        edit_max,
        float(min(len_max, 15)),
        1.0 if any(ch.isdigit() for w in unmatched for ch in w) else 0.0,
        1.0 if _code_mismatch(a, b) else 0.0,
    ]


def pair_vector(
    query: str,
    cached: str,
    query_vec: npt.NDArray[np.float32],
    cached_vec: npt.NDArray[np.float32],
    *,
    embeddings: bool = False,
) -> npt.NDArray[np.float32]:
    """Hand features, then the word-alignment features
    (:mod:`flowopt.cache._alignment`), and with ``embeddings`` the unit embeddings'
    ``|u - v|`` and ``u * v`` (the SBERT classification head's inputs), as one float32
    vector. The shipped verifier leaves the raw embeddings out: trees over them learn the
    training corpus's topics, not what makes two texts say the same thing."""
    from flowopt.cache._alignment import align_features

    cos = float(np.dot(query_vec, cached_vec))
    a, b = text_info(query), text_info(cached)
    parts = [np.asarray(hand_features(a, b, cos) + align_features(a, b), dtype=np.float32)]
    if embeddings:
        parts += [
            np.abs(query_vec - cached_vec).astype(np.float32),
            (query_vec * cached_vec).astype(np.float32),
        ]
    return np.concatenate(parts)


def pair_matrix(
    queries: Sequence[str],
    cached: Sequence[str],
    query_vecs: npt.NDArray[np.float32],
    cached_vecs: npt.NDArray[np.float32],
    *,
    embeddings: bool = False,
) -> npt.NDArray[np.float32]:
    """:func:`pair_vector` for many pairs at once (training and evaluation)."""
    rows = [
        pair_vector(q, c, query_vecs[i], cached_vecs[i], embeddings=embeddings)
        for i, (q, c) in enumerate(zip(queries, cached, strict=True))
    ]
    return np.vstack(rows)
