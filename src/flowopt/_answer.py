"""The pieces of an answer: token counts, decisions, logprobs, stream chunks and choices.

Split from :mod:`flowopt.types` (which re-exports every name here) to keep each module
small; import them from ``flowopt.types``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from flowopt.messages import ToolCall, ToolCallDelta

__all__ = ["EMPTY", "Choice", "Chunk", "Decision", "TokenLogprob", "Usage", "freeze"]

EMPTY: Mapping[str, Any] = MappingProxyType({})


def freeze(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only shallow copy (the one shared empty mapping when empty)."""
    if not mapping:
        return EMPTY
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the server reported them (``cached_input_tokens`` when it says)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What one middleware decided for one request, e.g. ``Decision("cache", "hit",
    {"tier": "semantic", "score": 0.93})``. Decisions travel on the response and on spans.
    """

    middleware: str
    action: str
    detail: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", freeze(self.detail))

    def to_dict(self) -> dict[str, Any]:
        return {"middleware": self.middleware, "action": self.action, **dict(self.detail)}


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token with its log-probability and the top alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a streamed answer. ``index`` counts chunks from 0.

    ``choice`` is the choice the piece belongs to (0 unless the request asked for several
    with OpenAI's ``n``). ``passthrough`` holds the fields of the engine's event that
    flowopt does not model (vLLM's ``stop_reason``, ``token_ids``, a top-level
    ``system_fingerprint``...) as a read-only sparse mirror of the event
    (``{"choices": ({"stop_reason": None},)}``), so the gateway can write them back; it is
    not copied or frozen here (a chunk is built per token), the producer hands in a
    read-only mapping and reuses one object while the fields do not change.
    """

    text: str
    index: int
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    reasoning: str = ""
    choice: int = 0
    passthrough: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class Choice:
    """One of several answers to one request (OpenAI's ``n``).

    A :class:`~flowopt.types.Response` *is* its first choice (``text``, ``finish_reason``,
    ``logprobs``, ``tool_calls``, ``reasoning_content``) so that every middleware written
    for one answer keeps working; the others are ``Response.extra_choices`` and
    ``Response.choices`` lists them all.
    """

    index: int
    text: str
    finish_reason: str | None = "stop"
    logprobs: tuple[TokenLogprob, ...] | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning_content: str | None = None
