"""One training example, and the two things decided from its prompt alone: "the same
prompt" (deduplication) and which side of the split it lands on.

Why the split is a hash of the normalised prompt and not a random draw: the same prompt
must land on the same side on every export, or a prompt trained on yesterday is "held out"
today and the before/after figures flatter the student. Hashing also keeps paraphrase-free
duplicates (case, spacing, trailing punctuation) on one side, since they share a key.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Example", "holdout_side", "prompt_key"]

_SPACE = re.compile(r"\s+")
_TRAIL = re.compile(r"[\s.?!…]+$")


@dataclass(frozen=True, slots=True)
class Example:
    """A prompt (system and user/assistant turns, OpenAI form) and the accepted answer.

    ``source`` is where it came from (``cache``, ``batch``), ``model`` the model that
    answered (as the response named it), ``created_at`` the Unix time it was answered.
    """

    messages: tuple[dict[str, Any], ...]
    answer: str
    source: str
    tenant: str | None
    model: str
    created_at: float

    def record(self) -> dict[str, Any]:
        """The OpenAI chat fine-tuning line: ``{"messages": [..., assistant]}`` and nothing
        else (the fine-tuning API rejects unknown keys)."""
        return {"messages": [*self.messages, {"role": "assistant", "content": self.answer}]}

    def texts(self) -> list[str]:
        """Every text of the example (what the PII check reads)."""
        return [str(m.get("content") or "") for m in self.messages] + [self.answer]


def _normal(text: str) -> str:
    return _TRAIL.sub("", _SPACE.sub(" ", text).strip()).casefold()


def prompt_key(messages: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> str:
    """A stable key of the prompt: roles and texts, case-folded, spacing collapsed,
    trailing punctuation dropped. Two prompts with one key are duplicates."""
    norm = [[str(m.get("role")), _normal(str(m.get("content") or ""))] for m in messages]
    raw = json.dumps(norm, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(raw.encode("utf-8"), digest_size=16).hexdigest()


def holdout_side(key: str, fraction: float) -> bool:
    """True when the prompt with ``key`` belongs to the held-out split (a ``fraction`` of
    all keys, the same ones on every run)."""
    if fraction <= 0.0:
        return False
    bucket = int(key[:16], 16) / float(1 << 64)
    return bucket < fraction
