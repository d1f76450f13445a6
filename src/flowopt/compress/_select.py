"""Coarse-to-fine selection (LongLLMLingua's shape) with protected ranges kept verbatim.

1. Coarse: when the marked content is several passages, rank them by relevance to the
   question (the scorer's ``rank``) and keep the best ones until the kept text is a little
   over the budget (``coarse_slack``); dropped passages cost nothing to prune.
2. Fine: cut the kept passages into words (a word and its trailing whitespace, so what is
   kept rejoins cleanly), score each word by the mean surprise of its tokens, force every
   word that touches a protected range, then keep the most surprising of the rest, across
   all passages, until the budget is met. Kept words stay in their original order.

The selection is deterministic for a given scorer, so a repeated prompt compresses to the
same bytes (a prefix-cache hit on the compressed form).
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass

from flowopt.compress._protect import protected_ranges
from flowopt.compress.ranker import Ranker
from flowopt.compress.scorer import Scorer

__all__ = ["Selection", "select"]

_WORD = re.compile(r"\S+\s*")
_QWORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_STOP = frozenset(
    {"what", "which", "when", "where", "who", "whom", "whose", "with", "from", "that", "this"}
    | {"have", "does", "were", "been", "into", "about", "there", "their", "they", "them"}
    | {"then", "than", "also", "only", "much", "many", "most", "some", "such"}
)


@dataclass(frozen=True)
class Selection:
    """The compressed passages (``None`` for a passage dropped whole) and the counts."""

    passages: tuple[str | None, ...]
    tokens_before: int
    tokens_after: int
    protected_tokens: int
    dropped_passages: int

    @property
    def ratio(self) -> float:
        return self.tokens_before / max(1, self.tokens_after)


def question_words(question: str) -> tuple[str, ...]:
    """Content words of the question: kept wherever they occur (the question's anchors)."""
    return tuple(
        sorted({w for w in _QWORD.findall(question) if w.lower() not in _STOP}, key=str.lower)
    )


def _coarse(
    rank: Ranker,
    passages: list[str],
    counts: list[int],
    question: str,
    budget: float,
    slack: float,
    min_passages: int,
    coarse: bool,
) -> tuple[list[bool], list[float]]:
    """Which passages to keep, and each one's bonus for the fine step: LongLLMLingua's
    dynamic ratio, a linear bonus from the best-ranked kept passage (+1) to the worst (0),
    so the passages most likely to hold the answer are pruned least."""
    n = len(passages)
    if n < 2 or not question:
        return [True] * n, [0.0] * n
    scores = rank(passages, question)
    order = sorted(range(n), key=lambda i: (-scores[i], i))
    keep = [True] * n
    if coarse and sum(counts) > budget * slack:
        keep = [False] * n
        total = 0
        for k, i in enumerate(order):
            if k >= min_passages and total >= budget * slack:
                break
            keep[i] = True
            total += counts[i]
    kept = [i for i in order if keep[i]]
    bonus = [0.0] * n
    for k, i in enumerate(kept):
        bonus[i] = 1.0 - k / max(1, len(kept) - 1)
    return keep, bonus


def select(
    scorer: Scorer,
    passages: list[str],
    *,
    question: str = "",
    ratio: float | None = None,
    target_tokens: int | None = None,
    coarse: bool = True,
    coarse_slack: float = 1.3,
    min_passages: int = 1,
    ranker: Ranker | None = None,
    dynamic: float = 4.0,
) -> Selection:
    """Compress ``passages`` to ``target_tokens`` (or their tokens / ``ratio``).
    ``dynamic``: nats of surprise added to the words of the best-ranked passage (scaled
    down linearly to 0 for the worst kept one)."""
    counts = [scorer.count_tokens(p) for p in passages]
    before = sum(counts)
    budget = float(target_tokens) if target_tokens is not None else before / (ratio or 1.0)
    anchors = question_words(question)
    keep, bonus = _coarse(
        ranker or scorer.rank,
        passages,
        counts,
        question,
        budget,
        coarse_slack,
        min_passages,
        coarse,
    )
    # fine: words of every kept passage, with (passage, score, tokens, forced)
    words: list[tuple[int, int, int, float, int, bool]] = []  # (p, start, end, score, n, forced)
    forced_tokens = 0
    for p, text in enumerate(passages):
        if not keep[p]:
            continue
        prot = protected_ranges(text, anchors)
        covered = sum(e - s for s, e in prot) >= len("".join(text.split()))
        toks = [] if covered else scorer.token_scores(text)  # all protected: nothing to score
        spans = [m.span() for m in _WORD.finditer(text)]
        starts = [a for a, _ in spans]
        sums = [0.0] * len(spans)
        ns = [0] * len(spans)
        for ts, te, loss in toks:  # a token belongs to the word of its first visible char
            piece = text[ts:te]
            anchor = ts + (len(piece) - len(piece.lstrip()))
            w = bisect.bisect_right(starts, min(anchor, max(ts, te - 1))) - 1
            if 0 <= w < len(spans):
                sums[w] += loss
                ns[w] += 1
        for w, (start, end) in enumerate(spans):
            word_end = start + len(text[start:end].rstrip())
            n = ns[w]
            score = (sums[w] / n if n else math.inf) + dynamic * bonus[p]
            forced = any(s < word_end and e > start for s, e in prot)
            n = max(n, 1)
            words.append((p, start, end, score, n, forced))
            if forced:
                forced_tokens += n
    room = budget - forced_tokens
    chosen: set[int] = {i for i, w in enumerate(words) if w[5]}
    for i in sorted((i for i, w in enumerate(words) if not w[5]), key=lambda i: (-words[i][3], i)):
        if room < words[i][4]:
            if room <= 0:
                break
            continue
        chosen.add(i)
        room -= words[i][4]
    result, after = _assemble(scorer, passages, keep, words, chosen)
    # Words re-tokenise differently once joined (a kept word loses the space that made it
    # one token): trim the least surprising kept words until the budget truly holds, so
    # the achieved ratio is the asked one, not a few percent short.
    droppable = sorted((i for i in chosen if not words[i][5]), key=lambda i: (words[i][3], -i))
    for _ in range(4):
        excess = after - budget
        if excess <= 0 or not droppable:
            break
        cut = 0.0
        while droppable and cut < excess * 1.1 + 1:
            i = droppable.pop(0)
            chosen.discard(i)
            cut += words[i][4]
        result, after = _assemble(scorer, passages, keep, words, chosen)
    return Selection(result, before, after, forced_tokens, keep.count(False))


def _assemble(
    scorer: Scorer,
    passages: list[str],
    keep: list[bool],
    words: list[tuple[int, int, int, float, int, bool]],
    chosen: set[int],
) -> tuple[tuple[str | None, ...], int]:
    """The kept words of each kept passage, in order, and their token count."""
    out: list[list[str]] = [[] for _ in passages]
    for i, (p, start, end, *_rest) in enumerate(words):
        if i in chosen:
            out[p].append(passages[p][start:end])
    result = tuple(("".join(out[p]).rstrip() if keep[p] else None) for p in range(len(passages)))
    return result, sum(scorer.count_tokens(t) for t in result if t)
