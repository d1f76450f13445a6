"""LangChain messages to flowopt's and back, losing nothing.

Why through OpenAI's shape: LangChain's own ``convert_to_openai_messages`` is the public,
maintained mapping from every ``BaseMessage`` kind (content blocks, tool calls, tool
results) to OpenAI dicts, and :class:`~flowopt.messages.Message` reads exactly that shape.
The way back builds ``AIMessage`` / ``AIMessageChunk`` with parsed ``tool_calls`` (arguments
that are not JSON become ``invalid_tool_calls``, as LangChain's OpenAI integration does),
``usage_metadata`` and flowopt's decisions in ``response_metadata``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    InvalidToolCall,
    ToolCall,
    UsageMetadata,
    convert_to_openai_messages,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk

from flowopt.messages import Message
from flowopt.types import Chunk, Response, Usage

__all__ = [
    "response_metadata",
    "to_ai_chunk",
    "to_ai_message",
    "to_flowopt_messages",
    "usage_metadata",
]


def to_flowopt_messages(messages: Sequence[BaseMessage]) -> tuple[Message, ...]:
    """LangChain messages as flowopt messages (content blocks, tool calls and tool call
    ids kept)."""
    raw = convert_to_openai_messages(list(messages))
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for item in items:
        if item.get("role") == "assistant" and item.get("tool_calls") and not item.get("content"):
            item = {**item, "content": None}  # OpenAI's shape for a tools-only turn
        out.append(Message.parse(item))
    return tuple(out)


def usage_metadata(usage: Usage) -> UsageMetadata:
    meta = UsageMetadata(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
    )
    if usage.cached_input_tokens:
        meta["input_token_details"] = {"cache_read": usage.cached_input_tokens}
    return meta


def response_metadata(response: Response) -> dict[str, Any]:
    """What LangChain integrations put in ``response_metadata``, plus flowopt's block."""
    out: dict[str, Any] = {
        "model_name": response.model,
        "finish_reason": response.finish_reason,
        "model_provider": "flowopt",
        "flowopt": {
            "cached": response.cached,
            "backend": response.backend,
            "decisions": [d.to_dict() for d in response.decisions],
        },
    }
    if response.cost is not None:
        out["flowopt"]["cost"] = response.cost
    return out


def _split_calls(response: Response) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    good: list[ToolCall] = []
    bad: list[InvalidToolCall] = []
    for call in response.tool_calls:
        try:
            args = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError as exc:
            bad.append(
                invalid_tool_call(name=call.name, args=call.arguments, id=call.id, error=str(exc))
            )
            continue
        if not isinstance(args, dict):
            bad.append(
                invalid_tool_call(
                    name=call.name,
                    args=call.arguments,
                    id=call.id,
                    error="arguments are not an object",
                )
            )
            continue
        good.append(tool_call(name=call.name, args=args, id=call.id))
    return good, bad


def to_ai_message(response: Response) -> AIMessage:
    """A complete flowopt answer as an ``AIMessage``."""
    good, bad = _split_calls(response)
    extra: dict[str, Any] = {}
    if response.reasoning_content is not None:
        extra["reasoning_content"] = response.reasoning_content
    rid = response.metadata.get("response_id")
    return AIMessage(
        content=response.text,
        tool_calls=good,
        invalid_tool_calls=bad,
        usage_metadata=usage_metadata(response.usage),
        response_metadata=response_metadata(response),
        additional_kwargs=extra,
        id=str(rid) if rid else None,
    )


def to_ai_chunk(chunk: Chunk) -> AIMessageChunk:
    """One streamed piece as an ``AIMessageChunk`` (tool calls as ``tool_call_chunks``,
    which LangChain joins by index when chunks are added)."""
    extra: dict[str, Any] = {}
    if chunk.reasoning:
        extra["reasoning_content"] = chunk.reasoning
    meta: dict[str, Any] = {}
    if chunk.finish_reason is not None:
        meta["finish_reason"] = chunk.finish_reason
    return AIMessageChunk(
        content=chunk.text,
        tool_call_chunks=[
            tool_call_chunk(name=d.name, args=d.arguments, id=d.id, index=d.index)
            for d in chunk.tool_calls
        ],
        additional_kwargs=extra,
        response_metadata=meta,
    )
