"""OpenAI request bodies in, OpenAI response bodies and SSE events out.

The inverse of :mod:`flowopt.backends._openai_wire`: that module speaks OpenAI *to* a model
server, this one speaks it *to* clients. Unknown top-level fields are passed through to the
model server in ``Params.extra`` (vLLM's ``top_k``, ``ignore_eos``, ``structured_outputs``,
``min_tokens``...) so the gateway is transparent for everything flowopt does not interpret,
including vLLM's own benchmark client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowopt.errors import InvalidRequestError
from flowopt.gateway.errors import HTTPProblem
from flowopt.messages import ToolCallDelta, check_tool_turns
from flowopt.types import Message, Params, Request, Response, TokenLogprob, Usage

try:  # orjson is ~5x faster on the per-token path; json is the fallback.
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def loads(data: bytes) -> Any:
        """Parse a request body; ``ValueError`` when it is not JSON. What orjson refuses
        and ``json`` accepts (NaN, huge integers) still parses, as it did with ``json``."""
        try:
            return orjson.loads(data)
        except ValueError:
            return json.loads(data)

except ImportError:  # pragma: no cover - depends on the environment

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(data: bytes) -> Any:
        return json.loads(data)


__all__ = [
    "Call",
    "TextChunks",
    "chat_chunk",
    "chat_json",
    "completion_chunk",
    "completion_json",
    "dumps",
    "loads",
    "parse_call",
    "usage_chunk",
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
        "n",
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

    Raises a 400 :class:`HTTPProblem` naming the field; type errors inside flowopt's
    value types surface as ``InvalidRequestError`` (also 400).
    """
    if not isinstance(body, Mapping):
        raise HTTPProblem(400, "the request body must be a JSON object")
    n = body.get("n", 1)
    if n not in (1, None):
        raise HTTPProblem(400, "only n=1 is supported", param="n")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise HTTPProblem(400, "'model' must be a string", param="model")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise HTTPProblem(400, "'user' must be a string", param="user")
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


# -- answers ------------------------------------------------------------------------------
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
        "text_offset": [],
    }


def _flowopt_block(response: Response) -> dict[str, Any]:
    """flowopt's own extension field: which middleware decided what. OpenAI clients keep
    unknown fields (``completion.model_extra``) and otherwise ignore them."""
    return {
        "cached": response.cached,
        "backend": response.backend,
        "decisions": [d.to_dict() for d in response.decisions],
    }


def _message(response: Response) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "role": "assistant",
        "content": None if response.tool_calls and not response.text else response.text,
    }
    if response.tool_calls:
        msg["tool_calls"] = [c.to_openai() for c in response.tool_calls]
    if response.reasoning_content is not None:
        msg["reasoning_content"] = response.reasoning_content
    return msg


def chat_json(call: Call, response: Response, model: str) -> bytes:
    return dumps(
        {
            "id": call.id,
            "object": "chat.completion",
            "created": call.created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": _message(response),
                    "logprobs": _chat_logprobs(response.logprobs),
                    "finish_reason": response.finish_reason,
                }
            ],
            "usage": usage_dict(response.usage),
            "flowopt": _flowopt_block(response),
        }
    )


def completion_json(call: Call, response: Response, model: str) -> bytes:
    return dumps(
        {
            "id": call.id,
            "object": "text_completion",
            "created": call.created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "text": response.text,
                    "logprobs": _completion_logprobs(response.logprobs),
                    "finish_reason": response.finish_reason,
                }
            ],
            "usage": usage_dict(response.usage),
            "flowopt": _flowopt_block(response),
        }
    )


def _event(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


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
    return _event(
        {
            "id": call.id,
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": _chat_logprobs(logprobs),
                    "finish_reason": finish_reason,
                }
            ],
        }
    )


def completion_chunk(
    call: Call,
    model: str,
    *,
    text: str,
    finish_reason: str | None = None,
    logprobs: tuple[TokenLogprob, ...] = (),
) -> bytes:
    return _event(
        {
            "id": call.id,
            "object": "text_completion",
            "created": call.created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "text": text,
                    "logprobs": _completion_logprobs(logprobs),
                    "finish_reason": finish_reason,
                }
            ],
        }
    )


def usage_chunk(call: Call, model: str, usage: Usage, *, chat: bool) -> bytes:
    return _event(
        {
            "id": call.id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": call.created,
            "model": model,
            "choices": [],
            "usage": usage_dict(usage),
        }
    )


class TextChunks:
    """Encodes the common streamed chunk (text and finish reason, no logprobs) of one call
    from pre-built bytes: byte-identical to :func:`chat_chunk` / :func:`completion_chunk`
    for those arguments, without building and serialising the envelope per token."""

    __slots__ = ("_head", "_tail")

    def __init__(self, call: Call, model: str, *, chat: bool) -> None:
        envelope = dumps(
            {
                "id": call.id,
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": call.created,
                "model": model,
            }
        )
        opening = (
            b',"choices":[{"index":0,"delta":{"content":'
            if chat
            else (b',"choices":[{"index":0,"text":')
        )
        self._head = b"data: " + envelope[:-1] + opening
        self._tail = (
            b'},"logprobs":null,"finish_reason":'
            if chat
            else (b',"logprobs":null,"finish_reason":')
        )

    def __call__(self, text: str, finish_reason: str | None) -> bytes:
        fin = b"null" if finish_reason is None else dumps(finish_reason)
        return b"".join((self._head, dumps(text), self._tail, fin, b"}]}\n\n"))


def error_event(body: Mapping[str, Any]) -> bytes:
    return _event(body)


DONE = b"data: [DONE]\n\n"
