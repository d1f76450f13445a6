"""OpenAI request bodies in, OpenAI response bodies and SSE events out.

The inverse of :mod:`flowopt.backends._openai_wire`: that module speaks OpenAI *to* a model
server, this one speaks it *to* clients. Unknown top-level fields are passed through to the
model server in ``Params.extra`` (vLLM's ``top_k``, ``ignore_eos``, ``structured_outputs``,
``min_tokens``..., and OpenAI's ``n``, read with ``Params.n``) so the gateway is transparent
for everything flowopt does not interpret, including vLLM's own benchmark client.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowopt.errors import InvalidRequestError
from flowopt.gateway._answers import (
    DONE,
    TextChunks,
    chat_chunk,
    chat_json,
    completion_chunk,
    completion_json,
    error_event,
    usage_chunk,
    usage_dict,
)
from flowopt.gateway._fields import check_fields
from flowopt.gateway._json import dumps, loads
from flowopt.gateway.errors import HTTPProblem
from flowopt.messages import check_tool_turns
from flowopt.types import Message, Params, Request

__all__ = [
    "DONE",
    "Call",
    "TextChunks",
    "chat_chunk",
    "chat_json",
    "completion_chunk",
    "completion_json",
    "dumps",
    "error_event",
    "loads",
    "parse_call",
    "usage_chunk",
    "usage_dict",
]

# Fields the gateway interprets itself (everything else goes to the server in extra).
_OWN = frozenset(
    {
        "model",
        "messages",
        "prompt",
        "stream",
        "stream_options",
        "user",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "logprobs",
        "top_logprobs",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
    }
)


@dataclass(frozen=True, slots=True)
class Call:
    """One parsed client call: the flowopt request plus what the answer must echo."""

    request: Request
    model: str | None
    include_usage: bool
    id: str
    created: int


def _messages(raw: Any) -> tuple[Message, ...]:
    """Every message shape OpenAI documents, kept whole (content parts, ``null`` assistant
    content, tool calls, ``tool_call_id``, ``developer`` turns, unknown fields); the tool
    turns must make sense (see :func:`~flowopt.messages.check_tool_turns`)."""
    if not isinstance(raw, list) or not raw:
        raise HTTPProblem(400, "'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping) or "role" not in m:
            raise HTTPProblem(400, f"messages[{i}] needs a 'role'", param=f"messages[{i}]")
        try:
            out.append(Message.parse({"content": None, **m}))
        except InvalidRequestError as exc:
            where = f"messages[{i}]" + (f".{exc.param}" if exc.param else "")
            hint = f" ({exc.hint})" if exc.hint else ""
            raise HTTPProblem(400, f"{where}: {exc.message}{hint}", param=where) from None
    try:
        check_tool_turns(out)
    except InvalidRequestError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        raise HTTPProblem(400, exc.message + hint, param=exc.param) from None
    return tuple(out)


def _tools(body: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if body.get("tools") is not None:
        out["tools"] = body["tools"]
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, str | Mapping):
            raise HTTPProblem(
                400, "'tool_choice' must be a string or an object", param="tool_choice"
            )
        out["tool_choice"] = choice
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise HTTPProblem(
                400, "'parallel_tool_calls' must be a boolean", param="parallel_tool_calls"
            )
        out["parallel_tool_calls"] = parallel
    return out


def _params(body: Mapping[str, Any], kind: str) -> Params:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    logprobs = body.get("logprobs")
    top_logprobs = body.get("top_logprobs")
    if kind == "completion" and isinstance(logprobs, int) and not isinstance(logprobs, bool):
        # Completions take logprobs=N (alternatives per token); chat takes a bool + N.
        top_logprobs, logprobs = logprobs, True
    extra = {k: v for k, v in body.items() if k not in _OWN}
    try:
        return Params(
            temperature=body.get("temperature"),
            top_p=body.get("top_p"),
            max_tokens=max_tokens,
            stop=tuple(stop),
            seed=body.get("seed"),
            logprobs=bool(logprobs),
            top_logprobs=top_logprobs,
            response_format=body.get("response_format"),
            extra=extra,
        )
    except InvalidRequestError as exc:
        # Name the field as the caller spelled it (the engine would name that one too).
        spelled = {
            "max_tokens": "max_completion_tokens" if "max_completion_tokens" in body else None,
            "top_logprobs": "logprobs" if "top_logprobs" not in body else None,
        }.get(exc.param or "")
        if spelled is not None:
            exc.param = spelled
        raise


def parse_call(body: Any, *, kind: str, tenant: str | None, request_id: str) -> Call:
    """Validate a ``/v1/chat/completions`` or ``/v1/completions`` body.

    Raises a 400 :class:`HTTPProblem` naming the field (the types of every field read here
    are checked first, once: :func:`~flowopt.gateway._fields.check_fields`); range errors
    inside flowopt's value types surface as ``InvalidRequestError`` (also 400).
    """
    if not isinstance(body, Mapping):
        raise HTTPProblem(400, "the request body must be a JSON object")
    check_fields(body, kind)  # every field read below has the type OpenAI documents
    model = body.get("model")
    user = body.get("user")
    stream = bool(body.get("stream", False))
    opts = body.get("stream_options") or {}
    include_usage = bool(isinstance(opts, Mapping) and opts.get("include_usage"))
    try:
        params = _params(body, kind)
    except TypeError as exc:
        raise HTTPProblem(400, f"invalid sampling parameters: {exc}") from None
    common: dict[str, Any] = {
        "params": params,
        "stream": stream,
        # With API keys the key decides the tenant and `user` is the end user within it;
        # without keys the caller's `user` is the only identity there is.
        "tenant": tenant if tenant is not None else user,
        "user": user,
        "request_id": request_id,
    }
    if kind == "chat":
        request = Request(messages=_messages(body.get("messages")), **_tools(body), **common)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise HTTPProblem(400, "'prompt' must be a string", param="prompt")
        request = Request(prompt=prompt, **common)
    prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
    return Call(request, model, include_usage, prefix + request_id, int(time.time()))
