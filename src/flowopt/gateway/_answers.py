"""OpenAI answer bodies and SSE events, written from flowopt's :class:`Response` and
:class:`Chunk` (the request side is :mod:`flowopt.gateway._wire`).

What the engine sent that flowopt does not model (``Response.passthrough``,
``Chunk.passthrough``: ``system_fingerprint``, a message's ``refusal``, vLLM's
``stop_reason``...) is merged back into each body with :func:`merge`, so a client gets the
engine's fields; flowopt's own values win where both exist. Several choices (OpenAI's
``n``) are written in order, each with its ``index``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flowopt._answer import EMPTY
from flowopt.gateway._json import dumps
from flowopt.messages import ToolCallDelta, thaw
from flowopt.types import Choice, Response, TokenLogprob, Usage

if TYPE_CHECKING:
    from flowopt.gateway._wire import Call

__all__ = [
    "DONE",
    "TextChunks",
    "chat_chunk",
    "chat_json",
    "completion_chunk",
    "completion_json",
    "error_event",
    "merge",
    "usage_chunk",
    "usage_dict",
]

DONE = b"data: [DONE]\n\n"


def merge(target: dict[str, Any], mirror: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a passthrough mirror into a body being written (in place; returns it).

    A key the body lacks is added; objects merge key by key and lists (``choices``) item by
    item, by position; where both hold a plain value, the body's (flowopt's) stays.
    """
    for key, value in mirror.items():
        if key not in target:
            target[key] = thaw(value)
            continue
        current = target[key]
        if isinstance(current, dict) and isinstance(value, Mapping):
            merge(current, value)
        elif isinstance(current, list) and isinstance(value, tuple | list):
            for i, item in enumerate(value):
                if i >= len(current):
                    current.append(thaw(item))
                elif isinstance(current[i], dict) and isinstance(item, Mapping):
                    merge(current[i], item)
    return target


def usage_dict(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_input_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_input_tokens}
    return out


def _chat_logprobs(lps: tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
    if not lps:
        return None
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": list(t.token.encode("utf-8")),
                "top_logprobs": [
                    {"token": a, "logprob": v, "bytes": list(a.encode("utf-8"))} for a, v in t.top
                ],
            }
            for t in lps
        ]
    }


def _completion_logprobs(lps: tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
    if not lps:
        return None
    return {
        "tokens": [t.token for t in lps],
        "token_logprobs": [t.logprob for t in lps],
        "top_logprobs": [dict(t.top) for t in lps],
        "text_offset": [],  # the engine's offsets come back through the passthrough
    }


def _flowopt_block(response: Response) -> dict[str, Any]:
    """flowopt's own extension field: which middleware decided what. OpenAI clients keep
    unknown fields (``completion.model_extra``) and otherwise ignore them."""
    return {
        "cached": response.cached,
        "backend": response.backend,
        "decisions": [d.to_dict() for d in response.decisions],
    }


def _message(choice: Choice) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "role": "assistant",
        "content": None if choice.tool_calls and not choice.text else choice.text,
    }
    if choice.tool_calls:
        msg["tool_calls"] = [c.to_openai() for c in choice.tool_calls]
    if choice.reasoning_content is not None:
        msg["reasoning_content"] = choice.reasoning_content
    return msg


def _answer(call: Call, response: Response, model: str, *, chat: bool) -> bytes:
    choices: list[dict[str, Any]] = []
    for c in response.choices:
        if chat:
            choices.append(
                {
                    "index": c.index,
                    "message": _message(c),
                    "logprobs": _chat_logprobs(c.logprobs),
                    "finish_reason": c.finish_reason,
                }
            )
        else:
            choices.append(
                {
                    "index": c.index,
                    "text": c.text,
                    "logprobs": _completion_logprobs(c.logprobs),
                    "finish_reason": c.finish_reason,
                }
            )
    body: dict[str, Any] = {
        "id": call.id,
        "object": "chat.completion" if chat else "text_completion",
        "created": call.created,
        "model": model,
        "choices": choices,
        "usage": usage_dict(response.usage),
    }
    if response.passthrough:
        merge(body, response.passthrough)
    body["flowopt"] = _flowopt_block(response)
    return dumps(body)


def chat_json(call: Call, response: Response, model: str) -> bytes:
    return _answer(call, response, model, chat=True)


def completion_json(call: Call, response: Response, model: str) -> bytes:
    return _answer(call, response, model, chat=False)


def _event(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def _chunk_event(
    call: Call, model: str, choice: dict[str, Any], passthrough: Mapping[str, Any], chat: bool
) -> bytes:
    body = {
        "id": call.id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": call.created,
        "model": model,
        "choices": [choice],
    }
    if passthrough:
        merge(body, passthrough)
    return _event(body)


def chat_chunk(
    call: Call,
    model: str,
    *,
    text: str | None = None,
    role: bool = False,
    finish_reason: str | None = None,
    logprobs: tuple[TokenLogprob, ...] = (),
    tool_calls: tuple[ToolCallDelta, ...] = (),
    reasoning: str = "",
    choice: int = 0,
    passthrough: Mapping[str, Any] = EMPTY,
) -> bytes:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
        delta["content"] = ""
    if text is not None and (text or not tool_calls):
        delta["content"] = text
    if reasoning:
        delta["reasoning_content"] = reasoning
    if tool_calls:
        delta["tool_calls"] = [d.to_openai() for d in tool_calls]
    body = {
        "index": choice,
        "delta": delta,
        "logprobs": _chat_logprobs(logprobs),
        "finish_reason": finish_reason,
    }
    return _chunk_event(call, model, body, passthrough, True)


def completion_chunk(
    call: Call,
    model: str,
    *,
    text: str,
    finish_reason: str | None = None,
    logprobs: tuple[TokenLogprob, ...] = (),
    choice: int = 0,
    passthrough: Mapping[str, Any] = EMPTY,
) -> bytes:
    body = {
        "index": choice,
        "text": text,
        "logprobs": _completion_logprobs(logprobs),
        "finish_reason": finish_reason,
    }
    return _chunk_event(call, model, body, passthrough, False)


def usage_chunk(
    call: Call, model: str, usage: Usage, *, chat: bool, passthrough: Mapping[str, Any] = EMPTY
) -> bytes:
    """The last event before ``[DONE]``: usage, with the engine's top-level and usage
    fields (``system_fingerprint``, ``prompt_tokens_details``) from ``passthrough``."""
    body: dict[str, Any] = {
        "id": call.id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": call.created,
        "model": model,
        "choices": [],
        "usage": usage_dict(usage),
    }
    if passthrough:
        merge(body, {k: v for k, v in passthrough.items() if k != "choices"})
    return _event(body)


# Stand-ins for the text and the finish reason: TextChunks encodes a chunk with them once
# and splits the bytes where they landed.
_TEXT = "\x00flowopt-text\x00"
_FINISH = "\x00flowopt-finish\x00"


_UNBUILT = object()  # no chunk carries it: the first chunk always builds the parts


class TextChunks:
    """Encodes the common streamed chunk (choice 0's text and finish reason, no logprobs)
    of one call from pre-built bytes: byte-identical to :func:`chat_chunk` /
    :func:`completion_chunk` for those arguments, without building and serialising the
    envelope per token.

    The bytes around the text and the finish reason come from encoding one chunk with
    stand-ins and splitting there, so they are the full encoder's by construction. They
    are rebuilt only when a chunk's ``passthrough`` is another object than the last one's
    (the backend reuses one object while the engine's extra fields stay the same: a few
    times per stream), so the engine's fields cost nothing per token. Nothing is built
    before the first chunk: it brings the stream's first ``passthrough`` (vLLM sends
    fields of its own with every token), so building for none first would be wasted.
    """

    __slots__ = ("_call", "_chat", "_for", "_head", "_mid", "_model", "_tail")

    def __init__(self, call: Call, model: str, *, chat: bool) -> None:
        self._call = call
        self._model = model
        self._chat = chat
        self._for: object = _UNBUILT  # the passthrough the parts below were built for
        self._head = self._mid = self._tail = b""

    def _parts(self, passthrough: Mapping[str, Any]) -> tuple[bytes, bytes, bytes]:
        encode = chat_chunk if self._chat else completion_chunk
        raw = encode(
            self._call, self._model, text=_TEXT, finish_reason=_FINISH, passthrough=passthrough
        )
        head, rest = raw.split(dumps(_TEXT), 1)
        mid, tail = rest.split(dumps(_FINISH), 1)
        return head, mid, tail

    def __call__(
        self, text: str, finish_reason: str | None, passthrough: Mapping[str, Any] = EMPTY
    ) -> bytes:
        if passthrough is not self._for:
            self._head, self._mid, self._tail = self._parts(passthrough)
            self._for = passthrough
        fin = b"null" if finish_reason is None else dumps(finish_reason)
        return b"".join((self._head, dumps(text), self._mid, fin, self._tail))


def error_event(body: Mapping[str, Any]) -> bytes:
    return _event(body)
