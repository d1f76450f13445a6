"""Working memory: keep a conversation within a token budget without breaking it.

Why it exists: apps replay the whole history on every call, so cost grows with the square
of the conversation's length and a long chat eventually overflows the context window.
Dropping old turns is the cheap fix, but a naive cut breaks the conversation: a model that
sees a tool result without the call that asked for it (OpenAI and vLLM refuse that), or an
answer without its question, misreads what follows.

The rules, in order:

1. The leading system/developer messages (the static prompt) are always kept, byte for
   byte, so the server's prefix cache keeps hitting.
2. What follows is trimmed from the oldest end only, and what is kept always starts at a
   user message: so a kept answer always has its question, and a kept tool result always
   has the assistant turn that called it (both come after that user message).
3. The last user turn and everything after it (the current request) is never dropped,
   even when it alone is over budget: the decision records ``over_budget`` instead.

LangChain's ``trim_messages`` already implements rule 2 (``strategy="last"``,
``start_on="human"``), so it does the cut; this module maps flowopt messages to LangChain
messages by position and back, so the kept messages are the caller's own objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    trim_messages,
)

from flowopt.messages import Message

__all__ = ["TokenCounter", "TrimResult", "approx_tokens", "split_static_prefix", "trim_history"]

TokenCounter = Callable[[Message], int]
"""Tokens one message costs in the prompt (content plus the template's per-turn tokens)."""

_STATIC = ("system", "developer")


def approx_tokens(message: Message) -> int:
    """A fast estimate: ~4 characters per token plus 4 tokens of chat-template framing.
    Good enough to keep a budget; pass a real tokenizer's count when exactness matters."""
    size = len(message.text)
    for call in message.tool_calls:
        size += len(call.name) + len(call.arguments)
    return size // 4 + 4


def split_static_prefix(messages: Sequence[Message]) -> int:
    """How many leading messages are the static system/developer prompt."""
    n = 0
    while n < len(messages) and messages[n].role in _STATIC:
        n += 1
    return n


@dataclass(frozen=True)
class TrimResult:
    """What trimming kept and dropped. ``over_budget``: the current turn alone (with the
    static prompt) is larger than the budget, and was kept anyway."""

    messages: tuple[Message, ...]
    dropped: int
    tokens_before: int
    tokens_after: int
    over_budget: bool


def _to_langchain(i: int, m: Message) -> BaseMessage:
    """A stand-in LangChain message of the same type, carrying the position as its id."""
    mid = str(i)
    if m.role == "user":
        return HumanMessage(content="", id=mid)
    if m.role == "assistant":
        calls = [
            {"name": c.name, "args": {}, "id": c.id, "type": "tool_call"} for c in m.tool_calls
        ]
        return AIMessage(content="", id=mid, tool_calls=calls)
    if m.role == "tool":
        return ToolMessage(content="", id=mid, tool_call_id=m.tool_call_id or "")
    return SystemMessage(content="", id=mid)


def _last_user(messages: Sequence[Message], start: int) -> int:
    for i in range(len(messages) - 1, start - 1, -1):
        if messages[i].role == "user":
            return i
    return start


def trim_history(
    messages: Sequence[Message],
    max_tokens: int,
    *,
    count: TokenCounter = approx_tokens,
) -> TrimResult:
    """Keep ``messages`` within ``max_tokens`` by the rules in the module docstring."""
    msgs = tuple(messages)
    costs = [count(m) for m in msgs]
    total = sum(costs)
    if total <= max_tokens:
        return TrimResult(msgs, 0, total, total, False)
    n_static = split_static_prefix(msgs)
    static_cost = sum(costs[:n_static])
    history = [_to_langchain(i, m) for i, m in enumerate(msgs) if i >= n_static]

    def counter(batch: list[BaseMessage]) -> int:
        return sum(costs[int(str(b.id))] for b in batch)

    kept_lc = trim_messages(
        history,
        max_tokens=max(0, max_tokens - static_cost),
        token_counter=counter,
        strategy="last",
        start_on="human",
        allow_partial=False,
    )
    first_kept = int(str(kept_lc[0].id)) if kept_lc else len(msgs)
    # Rule 3: never drop the current turn, whatever the budget says.
    current = _last_user(msgs, n_static)
    over = first_kept > current
    first_kept = min(first_kept, current)
    kept = msgs[:n_static] + msgs[first_kept:]
    after = static_cost + sum(costs[first_kept:])
    return TrimResult(kept, len(msgs) - len(kept), total, after, over)
