"""What may be compressed: marked by the app, never guessed.

A request says which of its text is variable and long through :func:`mark` (the passages a
step retrieved, a named template field's value: they go into ``Request.metadata`` under
:data:`METADATA_KEY`), or the middleware's options say it by role (``tool`` results) or by
age (chat turns older than the last ``keep_turns``). Everything else is never touched:
system and developer messages (the static prefix the server's prefix cache reuses), the
user's question, and any message text outside the marked passages.

Each mark resolves to a :class:`Span`: which message, which characters. A marked passage
that does not occur in a user/assistant/tool message is an :class:`InvalidRequestError`
(a mark that silently matches nothing would make compression silently do nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowopt._inputs import COMPRESS_MARKS
from flowopt.errors import InvalidRequestError
from flowopt.types import Request

__all__ = ["METADATA_KEY", "Span", "find_spans", "mark", "question_of"]

METADATA_KEY = COMPRESS_MARKS
"""Request metadata key of the marks: ``{"passages": [...], "question": "..."}``."""

_NEVER = frozenset({"system", "developer"})


@dataclass(frozen=True)
class Span:
    """Characters ``start:end`` of message ``message``'s text, compressible as one passage."""

    message: int
    start: int
    end: int


def mark(request: Request, passages: Sequence[str], *, question: str | None = None) -> Request:
    """``request`` with ``passages`` (substrings of its user/tool messages) marked as
    compressible, and the question they serve (default: the last user message less the
    passages)."""
    meta: dict[str, Any] = dict(request.metadata)
    entry: dict[str, Any] = {"passages": list(passages)}
    if question is not None:
        entry["question"] = question
    meta[METADATA_KEY] = entry
    return request.replace(metadata=meta)


def _marked(request: Request) -> tuple[list[str], str | None]:
    raw = request.metadata.get(METADATA_KEY)
    if raw is None:
        return [], None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("passages", []), Sequence):
        raise InvalidRequestError(
            f"metadata {METADATA_KEY!r} must be {{'passages': [str, ...], 'question': str}}",
            hint="build it with flowopt.compress.mark(request, passages)",
            request_id=request.request_id,
        )
    passages = [p for p in raw.get("passages", ()) if isinstance(p, str) and p.strip()]
    question = raw.get("question")
    return passages, question if isinstance(question, str) else None


def find_spans(
    request: Request, *, roles: Sequence[str] = (), keep_turns: int | None = None
) -> list[Span]:
    """The compressible spans of ``request``, in message order."""
    msgs = request.messages
    texts = [m.content if isinstance(m.content, str) else None for m in msgs]
    spans: list[Span] = []
    taken: set[int] = set()  # whole messages already marked
    last_user = max((i for i, m in enumerate(msgs) if m.role == "user"), default=-1)
    for i, m in enumerate(msgs):
        if m.role in _NEVER or texts[i] is None or i == last_user:
            continue
        if m.role in roles:
            spans.append(Span(i, 0, len(texts[i] or "")))
            taken.add(i)
    if keep_turns is not None:
        turns = [i for i, m in enumerate(msgs) if m.role in ("user", "assistant")]
        for i in turns[: max(0, len(turns) - keep_turns)]:
            if i not in taken and texts[i] is not None and i != last_user:
                spans.append(Span(i, 0, len(texts[i] or "")))
                taken.add(i)
    passages, _ = _marked(request)
    for p in passages:
        found = False
        for i, m in enumerate(msgs):
            text = texts[i]
            if m.role in _NEVER or text is None or i in taken:
                continue
            at = text.find(p)
            while at >= 0:
                spans.append(Span(i, at, at + len(p)))
                found = True
                at = text.find(p, at + len(p))
            if found:
                break
        if not found:
            raise InvalidRequestError(
                f"a passage marked compressible ({len(p)} characters) is not in any "
                "user, assistant or tool message of the request",
                hint="mark the exact text the prompt contains (system messages are never "
                "compressed)",
                request_id=request.request_id,
            )
    spans.sort(key=lambda s: (s.message, s.start))
    out: list[Span] = []
    for s in spans:  # overlapping marks: the first wins
        if out and out[-1].message == s.message and s.start < out[-1].end:
            continue
        out.append(s)
    return out


def question_of(request: Request, spans: Sequence[Span]) -> str:
    """The question the passages serve: the marked one, else the last user message with
    the marked passages cut out."""
    _, question = _marked(request)
    if question is not None:
        return question
    msgs = request.messages
    last = max((i for i, m in enumerate(msgs) if m.role == "user"), default=-1)
    content = msgs[last].content if last >= 0 else None
    if not isinstance(content, str):
        return ""
    text = content
    for s in sorted((s for s in spans if s.message == last), key=lambda s: -s.start):
        text = text[: s.start] + text[s.end :]
    return " ".join(text.split())
