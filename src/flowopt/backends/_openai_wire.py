"""Translate between flowopt's types and the OpenAI-compatible wire format.

Kept apart from the HTTP client so the parsing can be unit-tested on recorded bodies and
reused by the gateway. Every parse validates shape and raises
:class:`~flowopt.errors.BackendProtocolError` naming the endpoint on garbage, instead of a
``KeyError`` from deep inside.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from flowopt.errors import BackendProtocolError
from flowopt.messages import ToolCall, ToolCallDelta
from flowopt.types import Chunk, Request, TokenLogprob, Usage

__all__ = [
    "Completion",
    "build_payload",
    "dumps_payload",
    "loads_event",
    "parse_chunk",
    "parse_completion",
    "parse_usage",
]

try:  # orjson parses a stream event several times faster than json; json is the fallback.
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]


def loads_event(data: bytes) -> Any:
    """Parse one SSE ``data:`` payload. Raises ``ValueError`` when it is not JSON.

    Anything orjson refuses (NaN, huge integers, invalid UTF-8) is retried with ``json``
    on the text decoded with replacement characters, which is what the server's bytes
    always meant before orjson was used, so the result does not depend on orjson.
    """
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except ValueError:
            pass
    return json.loads(data.decode("utf-8", "replace"))


def dumps_payload(payload: Any) -> bytes:
    """A request body as JSON bytes: orjson when installed (several times faster), else
    ``json`` (also for what orjson refuses, such as integers beyond 64 bits)."""
    if _orjson is not None:
        try:
            return _orjson.dumps(payload)
        except TypeError:
            pass
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def build_payload(request: Request, served_model: str) -> dict[str, Any]:
    """The JSON body for ``/v1/chat/completions`` or ``/v1/completions``."""
    p = request.params
    body: dict[str, Any] = {"model": served_model}
    if request.kind == "chat":
        body["messages"] = [m.to_openai() for m in request.messages]
    else:
        body["prompt"] = request.prompt
    if p.temperature is not None:
        body["temperature"] = p.temperature
    if p.top_p is not None:
        body["top_p"] = p.top_p
    if p.max_tokens is not None:
        body["max_tokens"] = p.max_tokens
    if p.stop:
        body["stop"] = list(p.stop)
    if p.seed is not None:
        body["seed"] = p.seed
    if p.logprobs:
        if request.kind == "chat":
            body["logprobs"] = True
            if p.top_logprobs is not None:
                body["top_logprobs"] = p.top_logprobs
        else:
            body["logprobs"] = p.top_logprobs or 1
    if p.response_format is not None:
        body["response_format"] = dict(p.response_format)
    if request.tools or request.tool_choice is not None or request.parallel_tool_calls is not None:
        body.update(request.tools_payload())
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    for k, v in p.extra.items():
        body[k] = v
    return body


def _expect(cond: bool, what: str, endpoint: str) -> None:
    if not cond:
        raise BackendProtocolError(
            f"malformed response from the backend: {what}",
            endpoint=endpoint,
            hint="check that the URL points at an OpenAI-compatible server (e.g. vLLM's /v1)",
        )


def parse_usage(body: Mapping[str, Any] | None) -> Usage:
    if not body:
        return Usage()
    cached = 0
    details = body.get("prompt_tokens_details")
    if isinstance(details, Mapping):
        cached = int(details.get("cached_tokens") or 0)
    return Usage(
        input_tokens=int(body.get("prompt_tokens") or 0),
        output_tokens=int(body.get("completion_tokens") or 0),
        cached_input_tokens=cached,
    )


def _chat_logprobs(lp: Any) -> tuple[TokenLogprob, ...]:
    if not isinstance(lp, Mapping):
        return ()
    content = lp.get("content") or []
    out: list[TokenLogprob] = []
    for item in content:
        top = tuple(
            (str(t.get("token", "")), float(t.get("logprob", 0.0)))
            for t in (item.get("top_logprobs") or [])
        )
        out.append(TokenLogprob(str(item.get("token", "")), float(item.get("logprob", 0.0)), top))
    return tuple(out)


def _completion_logprobs(lp: Any) -> tuple[TokenLogprob, ...]:
    if not isinstance(lp, Mapping):
        return ()
    tokens = lp.get("tokens") or []
    values = lp.get("token_logprobs") or []
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    out: list[TokenLogprob] = []
    for tok, val, top in zip(tokens, values, tops, strict=False):
        alts = tuple((str(k), float(v)) for k, v in (top or {}).items())
        out.append(TokenLogprob(str(tok), float(val if val is not None else 0.0), alts))
    return tuple(out)


class Completion(NamedTuple):
    """A parsed non-streamed answer."""

    text: str
    finish_reason: str | None
    usage: Usage
    logprobs: tuple[TokenLogprob, ...] | None
    model: str
    id: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str | None = None


def _tool_calls(raw: Any, endpoint: str) -> tuple[ToolCall, ...]:
    if not raw:
        return ()
    _expect(isinstance(raw, list), "message.tool_calls is not a list", endpoint)
    out = []
    for i, item in enumerate(raw):
        fn = item.get("function") if isinstance(item, Mapping) else None
        _expect(
            isinstance(fn, Mapping) and isinstance(fn.get("name"), str),
            f"tool_calls[{i}] has no function name",
            endpoint,
        )
        args = fn.get("arguments")  # type: ignore[union-attr]
        if not isinstance(args, str):
            args = json.dumps(args if args is not None else {}, ensure_ascii=False)
        out.append(
            ToolCall(str(item.get("id") or f"call_{i}"), fn["name"], args)  # type: ignore[index]
        )
    return tuple(out)


def _tool_deltas(raw: Any, endpoint: str) -> tuple[ToolCallDelta, ...]:
    if not raw:
        return ()
    _expect(isinstance(raw, list), "delta.tool_calls is not a list", endpoint)
    out = []
    for pos, item in enumerate(raw):
        _expect(isinstance(item, Mapping), "a tool-call delta is not an object", endpoint)
        fn = item.get("function") or {}
        _expect(isinstance(fn, Mapping), "a tool-call delta's function is not an object", endpoint)
        idx = item.get("index", pos)
        _expect(isinstance(idx, int), "a tool-call delta's index is not an integer", endpoint)
        args = fn.get("arguments")
        out.append(
            ToolCallDelta(
                idx,
                item.get("id") or None,
                fn.get("name") or None,
                args if isinstance(args, str) else "",
            )
        )
    return tuple(out)


def _reasoning(msg: Mapping[str, Any]) -> str | None:
    value = msg.get("reasoning_content", msg.get("reasoning"))
    return value if isinstance(value, str) else None


def parse_completion(body: Any, *, kind: str, endpoint: str) -> Completion:
    """Parse a non-streamed body (text, finish reason, usage, logprobs, model, id, and for
    chat the tool calls and reasoning text)."""
    _expect(
        isinstance(body, Mapping), f"expected a JSON object, got {type(body).__name__}", endpoint
    )
    choices = body.get("choices")
    _expect(isinstance(choices, list) and len(choices) > 0, "no 'choices' in the body", endpoint)
    choice = choices[0]
    _expect(isinstance(choice, Mapping), "choices[0] is not an object", endpoint)
    calls: tuple[ToolCall, ...] = ()
    reasoning = None
    if kind == "chat":
        msg = choice.get("message")
        _expect(isinstance(msg, Mapping), "choices[0].message is missing", endpoint)
        text = msg.get("content") or ""
        calls = _tool_calls(msg.get("tool_calls"), endpoint)
        reasoning = _reasoning(msg)
        logprobs = _chat_logprobs(choice.get("logprobs")) if choice.get("logprobs") else None
    else:
        text = choice.get("text")
        _expect(isinstance(text, str), "choices[0].text is missing", endpoint)
        logprobs = _completion_logprobs(choice.get("logprobs")) if choice.get("logprobs") else None
    _expect(isinstance(text, str), "the answer text is not a string", endpoint)
    usage_raw = body.get("usage")
    usage = parse_usage(usage_raw if isinstance(usage_raw, Mapping) else None)
    return Completion(
        text,
        choice.get("finish_reason"),
        usage,
        logprobs,
        str(body.get("model", "")),
        body.get("id"),
        calls,
        reasoning,
    )


def parse_chunk(
    body: Any, *, kind: str, endpoint: str, index: int
) -> tuple[Chunk | None, Usage | None, str | None]:
    """Parse one SSE ``data:`` object into ``(chunk or None, usage or None, model)``."""
    _expect(isinstance(body, Mapping), "a stream event is not a JSON object", endpoint)
    usage_raw = body.get("usage")
    usage = parse_usage(usage_raw) if isinstance(usage_raw, Mapping) else None
    choices = body.get("choices") or []
    _expect(isinstance(choices, list), "a stream event's 'choices' is not a list", endpoint)
    if not choices:
        return None, usage, body.get("model")
    choice = choices[0]
    _expect(isinstance(choice, Mapping), "a stream event's choice is not an object", endpoint)
    deltas: tuple[ToolCallDelta, ...] = ()
    reasoning = ""
    if kind == "chat":
        delta = choice.get("delta") or {}
        _expect(isinstance(delta, Mapping), "a stream event's delta is not an object", endpoint)
        text = delta.get("content") or ""
        if "tool_calls" in delta:
            deltas = _tool_deltas(delta["tool_calls"], endpoint)
        reasoning = _reasoning(delta) or ""
        lps = _chat_logprobs(choice.get("logprobs"))
    else:
        text = choice.get("text") or ""
        lps = _completion_logprobs(choice.get("logprobs"))
    finish = choice.get("finish_reason")
    if not text and finish is None and not lps and not deltas and not reasoning:
        return None, usage, body.get("model")
    chunk = Chunk(str(text), index, lps, finish, deltas, reasoning)
    return chunk, usage, body.get("model")
