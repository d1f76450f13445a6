"""Map-reduce over chunks: answer a prompt too long for the window, part by part.

The marked passages are packed into chunks that each fit the window (a passage longer than
one chunk is cut into overlapping word windows, so a sentence cut at one edge is whole in
the next). Every chunk is asked the full request with only its own passages (the map
calls run concurrently, which keeps vLLM's continuous batching full), then one last call
gets the request with the passages replaced by the partial answers and merges them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence

from flowopt.compress.marks import Span
from flowopt.middleware.base import CallNext
from flowopt.types import Request, Response

__all__ = ["chunk_passages", "map_reduce"]

Rebuild = Callable[[Sequence[str | None]], Request]

_WORD = re.compile(r"\S+\s*")


def _split(text: str, count: Callable[[str], int], budget: int, overlap: float) -> list[str]:
    words = _WORD.findall(text)
    if not words:
        return [text]
    per_word = max(1.0, count(text) / len(words))
    size = max(1, int(budget / per_word))
    step = max(1, int(size * (1.0 - overlap)))
    return ["".join(words[i : i + size]) for i in range(0, max(1, len(words) - size + step), step)]


def chunk_passages(
    texts: Sequence[str],
    counts: Sequence[int],
    budget: int,
    count: Callable[[str], int],
    *,
    overlap: float = 0.15,
) -> list[list[str]]:
    """Pack ``texts`` in order into chunks of at most ``budget`` tokens."""
    chunks: list[list[str]] = [[]]
    used = 0
    for text, n in zip(texts, counts, strict=True):
        pieces = [text] if n <= budget else _split(text, count, budget, overlap)
        for piece in pieces:
            m = n if len(pieces) == 1 else count(piece)
            if chunks[-1] and used + m > budget:
                chunks.append([])
                used = 0
            chunks[-1].append(piece)
            used += m
    return [c for c in chunks if c]


async def map_reduce(
    request: Request,
    spans: Sequence[Span],
    chunks: Sequence[Sequence[str]],
    rebuild: Rebuild,
    call_next: CallNext,
) -> tuple[Response, int]:
    """Answer ``request`` over ``chunks``: the merged response and the number of map calls.
    ``rebuild(texts)`` gives the request with the marked spans replaced by ``texts``."""

    def with_chunk(chunk: Sequence[str]) -> Request:
        texts: list[str | None] = [None] * len(spans)
        texts[0] = "\n\n".join(chunk)
        return rebuild(texts).replace(stream=False)

    partials = await asyncio.gather(*(call_next(with_chunk(c)) for c in chunks))
    finals = [p if p.stream is None else await p.complete() for p in partials]
    notes = "\n".join(
        f"- Part {i + 1} of {len(finals)}: {r.text.strip()}" for i, r in enumerate(finals)
    )
    merged: list[str | None] = [None] * len(spans)
    merged[0] = (
        "The documents were too long to read at once; these are answers from each part of "
        "them. Merge them into one answer (ignore parts that found nothing):\n" + notes
    )
    return await call_next(rebuild(merged)), len(chunks)
