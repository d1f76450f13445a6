"""Extraction: turn a burst of conversation turns into short, attributable facts.

Why a prompt of our own: Mem0's extraction system prompt is ~7,700 tokens; on a 2-core CPU
the local 0.5B model takes tens of seconds just to read it, and a 4k-context model cannot
read it at all. :data:`SYSTEM_PROMPT` is ~250 tokens, static (so vLLM's prefix cache
absorbs it after the first call: the variable part, the turns, comes last), and asks for
JSON only. ``extractor: mem0`` in the middleware's options keeps Mem0's own path for
comparison (docs/memory.md has both measured).

What never becomes a memory, by construction: only the speakers' own turns are shown to
the extractor (never the system prompt, tool schemas or the assistant's answers, so the
assistant's guesses cannot be stored as facts about the user), and facts the PII detectors
flag are dropped unless the pipeline allows them.

Provenance is not left to the model: each fact is attributed to the source turns whose
embedding is closest to it (:func:`attribute`), so a recalled memory can always be traced
to real turn ids.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["RESPONSE_FORMAT", "SYSTEM_PROMPT", "Turn", "attribute", "build_messages", "parse_facts"]

SYSTEM_PROMPT = """You extract long-term memories from a conversation.
Write down every durable fact the speakers state about themselves or the people, places,
plans, events, preferences and possessions in their lives.
Rules:
- One short standalone sentence per fact, naming who it is about (write "User" for the user).
- Keep names, numbers and dates exactly; resolve "yesterday"/"last week" against the date.
- When a speaker changes or corrects something, write the new fact.
- Skip greetings, small talk, thanks, questions and anything not about the speakers.
Answer with JSON only: {"facts": ["...", "..."]}. If there is nothing to keep: {"facts": []}."""

RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "facts",
        "schema": {
            "type": "object",
            "properties": {"facts": {"type": "array", "items": {"type": "string"}, "maxItems": 12}},
            "required": ["facts"],
        },
    },
}
"""vLLM constrains the reply to this schema (a list of strings): small models otherwise
invent their own JSON shapes."""


@dataclass(frozen=True)
class Turn:
    """One source turn: its id (given by the app, or made by flowopt), who spoke, the text
    and the session date if known."""

    id: str
    speaker: str
    text: str
    date: str | None = None


def build_messages(turns: Sequence[Turn]) -> list[dict[str, str]]:
    """The extraction request: the static system prompt, then the turns."""
    dates = sorted({t.date for t in turns if t.date})
    head = f"Date: {dates[-1]}\n" if dates else ""
    body = "\n".join(f"{t.speaker}: {t.text}" for t in turns)
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{head}Conversation:\n{body}"},
    ]


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


def parse_facts(raw: str, *, limit: int = 20) -> list[str]:
    """Facts from the model's reply: ``{"facts": [...]}``, tolerant of code fences, of a
    bare list, and of objects with a ``fact``/``text`` field. Anything else: none."""
    text = _FENCE.sub("", raw.strip())
    try:
        data = json.loads(text)
    except ValueError:
        m = re.search(r"\{.*\}|\[.*\]", text, re.DOTALL)
        if m is None:
            return []
        try:
            data = json.loads(m.group(0))
        except ValueError:
            return []
    items = data.get("facts", data.get("memory", [])) if isinstance(data, dict) else data
    out: list[str] = []
    if not isinstance(items, list):
        return out
    for item in items:
        if isinstance(item, dict):
            item = item.get("fact") or item.get("text") or ""
        if isinstance(item, str) and len(item.strip()) > 3:
            fact = " ".join(item.split())
            if fact not in out:
                out.append(fact)
    return out[:limit]


def attribute(
    facts: Sequence[str],
    turns: Sequence[Turn],
    embed: Callable[[list[str]], np.ndarray],
    *,
    margin: float = 0.05,
) -> list[list[str]]:
    """For each fact, the ids of the turns it came from: the closest turn by cosine, plus
    any other within ``margin`` of it (a fact stated across two turns)."""
    if not facts or not turns:
        return [[] for _ in facts]
    vecs = embed([*facts, *(t.text for t in turns)])
    f, t = vecs[: len(facts)], vecs[len(facts) :]
    sims = f @ t.T
    out: list[list[str]] = []
    for row in sims:
        best = float(row.max())
        out.append([turns[j].id for j in np.argsort(-row) if row[j] >= best - margin][:3])
    return out
