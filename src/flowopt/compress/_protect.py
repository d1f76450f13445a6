"""Protected content: the character ranges compression must keep verbatim.

Why: a token-level compressor drops what its scorer finds predictable, and a number, an ID,
a URL or a line of code is often exactly that to a small LM ("2019" after "in"), yet it is
the one thing an answer cannot do without. So before any scoring, the text is cut into
protected ranges (kept byte for byte) and prose (which may be pruned). Structured content
(code blocks, JSON) is kept whole: a pruned JSON document is invalid, and a pruned record is
a silent loss. Detection is by pattern, deliberately generous: keeping a few extra tokens
costs little, dropping one ID costs the answer.
"""

from __future__ import annotations

import json
import re

__all__ = ["merge_ranges", "protected_ranges"]

_PATTERNS = (
    re.compile(r"```.*?(?:```|\Z)", re.S),  # fenced code (an unclosed fence runs to the end)
    re.compile(r"`[^`\n]+`"),  # inline code
    re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+"),  # URLs
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),  # e-mail addresses
    # multi-word names (two or more capitalised words): "Theodore Roosevelt" must not lose
    # its predictable second half
    re.compile(r"\b[A-Z][a-z]+(?:[ \t]+(?:[A-Z][a-z]+|[A-Z]\.))+"),
    # UUIDs, hex digests, and IDs mixing letters with digits or joined by - _ / : .
    re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
    re.compile(r"\b(?=[\w./:-]*\d)[A-Za-z_][\w]*(?:[-_/:.][\w]+)+\b"),
    re.compile(r"\b(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]{2,}\b"),
    # numbers: 1,234.5 / -3 / 12% / $40 / 3.2e-5 / dates like 2019-05-01 and 12/05/2019
    re.compile(r"[$€£]?[-+]?\d[\d,.:/-]*(?:[eE][-+]?\d+)?%?"),
)


def _json_ranges(text: str) -> list[tuple[int, int]]:
    """Ranges of complete JSON objects/arrays in ``text`` (each parsed to be sure)."""
    out: list[tuple[int, int]] = []
    decoder = json.JSONDecoder()
    i = 0
    while True:
        starts = [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]
        if not starts:
            return out
        start = min(starts)
        try:
            _, end = decoder.raw_decode(text, start)
        except ValueError:
            i = start + 1
            continue
        if end - start > 2:  # "[]" and "{}" are not worth a range
            out.append((start, end))
        i = end


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping union of ``ranges``."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def protected_ranges(text: str, extra: tuple[str, ...] = ()) -> list[tuple[int, int]]:
    """Character ranges of ``text`` to keep verbatim: code, JSON, URLs, e-mails, IDs,
    numbers, and every occurrence of the strings in ``extra`` (e.g. words of the question)."""
    ranges = _json_ranges(text)
    for pattern in _PATTERNS:
        ranges.extend(m.span() for m in pattern.finditer(text) if m.end() > m.start())
    for word in extra:
        if word:
            ranges.extend(
                m.span() for m in re.finditer(rf"\b{re.escape(word)}\b", text, flags=re.I)
            )
    return merge_ranges(ranges)
