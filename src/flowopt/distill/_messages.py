"""Prompts reduced to plain chat: ``role`` and text ``content``, nothing else.

Why so strict: a training line must say exactly what the teacher saw. A turn with tool
calls, a tool result or an image part cannot be replayed as text without changing its
meaning, so such a prompt is dropped (``not_plain_chat``) rather than flattened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["ROLES", "plain_messages"]

ROLES = frozenset({"system", "developer", "user", "assistant"})


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                return None  # an image, audio or file part
            parts.append(str(part.get("text") or ""))
        return "".join(parts)
    return None


def plain_messages(messages: Sequence[Any]) -> tuple[dict[str, str], ...] | None:
    """``messages`` as ``({"role", "content"}, ...)`` ending with a user turn, or None when
    any turn is not plain text chat (tools, images) or the prompt does not end with the
    user (a prefill). ``developer`` turns become ``system`` (what fine-tuning accepts)."""
    out: list[dict[str, str]] = []
    for m in messages:
        if not isinstance(m, dict):
            return None
        role = m.get("role")
        if role not in ROLES or m.get("tool_calls") or m.get("function_call"):
            return None
        text = _text(m.get("content"))
        if text is None:
            return None
        out.append({"role": "system" if role == "developer" else str(role), "content": text})
    if not out or out[-1]["role"] != "user" or not out[-1]["content"].strip():
        return None
    return tuple(out)
