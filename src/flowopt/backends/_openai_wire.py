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

from flowopt._answer import EMPTY
from flowopt.errors import BackendProtocolError
from flowopt.messages import ToolCall, ToolCallDelta, _deep_freeze
from flowopt.types import Choice, Chunk, Request, TokenLogprob, Usage

__all__ = [
    "Completion",
    "PassthroughMemo",
    "build_payload",
    "dumps_payload",
    "loads_event",
    "parse_chunk",
    "parse_completion",
    "parse_usage",
    "passthrough_of",
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
    """A parsed non-streamed answer: its first choice, the others (``choices``, when the
    request set ``n``) and the engine's fields flowopt does not model (``passthrough``)."""

    text: str
    finish_reason: str | None
    usage: Usage
    logprobs: tuple[TokenLogprob, ...] | None
    model: str
    id: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str | None = None
    choices: tuple[Choice, ...] = ()
    passthrough: Mapping[str, Any] = EMPTY


# What flowopt models of an answer, per level of the body; everything else is passthrough.
_TOP = frozenset({"id", "object", "created", "model", "choices", "usage"})
_USAGE = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})
_CHOICE = frozenset({"index", "message", "delta", "text", "logprobs", "finish_reason"})
_MESSAGE = frozenset({"role", "content", "tool_calls", "reasoning_content"})
_LOGPROBS = {
    "chat": frozenset({"content"}),
    "completion": frozenset({"tokens", "token_logprobs", "top_logprobs"}),
}


def _rest(obj: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in known}


def _choice_rest(choice: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """A choice's (or a stream event choice's) unmodelled fields, nested as in the body."""
    out = _rest(choice, _CHOICE)
    for key in ("message", "delta"):
        inner = choice.get(key)
        if isinstance(inner, Mapping):
            rest = _rest(inner, _MESSAGE)
            if rest:
                out[key] = rest
    lp = choice.get("logprobs")
    if isinstance(lp, Mapping):
        rest = _rest(lp, _LOGPROBS[kind])
        if rest:
            out["logprobs"] = rest
    return out


def passthrough_of(body: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """The fields of an answer body (or a stream event) that flowopt does not model, as a
    read-only sparse mirror of the body (``choices`` by position), or the empty mapping.

    Why a mirror rather than a list of named fields: the gateway writes it back by merging
    it into the body it builds, so any field any engine adds, at any level, comes through
    without flowopt having to know it.
    """
    out = _rest(body, _TOP)
    usage = body.get("usage")
    if isinstance(usage, Mapping):
        rest = _rest(usage, _USAGE)
        if rest:
            out["usage"] = rest
    choices = body.get("choices")
    if isinstance(choices, list):
        mirrors = [_choice_rest(c, kind) if isinstance(c, Mapping) else {} for c in choices]
        if any(mirrors):
            out["choices"] = mirrors
    return _deep_freeze(out) if out else EMPTY


class PassthroughMemo:
    """The unmodelled fields of a stream's events, cheaply, on the per-token path.

    vLLM sends the same unmodelled fields (``token_ids: null``) with every token, so a
    stream holds a few distinct mirrors. The memo remembers the last event's *layout* (its
    keys at each level) and which of those keys are unmodelled; for an event of the same
    layout it only reads those keys' values, and when they equal the last event's it
    returns the same frozen object — which also lets the gateway's pre-encoded fast path
    recognise it by identity.
    """

    __slots__ = ("_layout", "_plan", "_vals", "last")

    def __init__(self) -> None:
        self._layout: tuple[Any, ...] = (None,)
        self._plan: list[tuple[int, str]] = []
        self._vals: list[Any] | None = None
        self.last: Mapping[str, Any] = EMPTY

    def of(
        self, body: Mapping[str, Any], choice: Mapping[str, Any], kind: str
    ) -> Mapping[str, Any]:
        """The mirror of one stream event (top level and its one choice)."""
        delta = choice.get("delta")
        lp = choice.get("logprobs")
        # ``type(...) is dict`` first: an ABC isinstance check costs ~0.3 µs a token
        if type(delta) is not dict and not isinstance(delta, Mapping):
            delta = _NONE
        if lp is None or (type(lp) is not dict and not isinstance(lp, Mapping)):
            lp = _NONE
        # One flat tuple of the keys, levels separated by None: a single allocation, and
        # compared by identity for the keys orjson interns.
        layout = (*body, None, *choice, None, *delta, None, *lp)
        if layout != self._layout:
            self._layout = layout
            self._plan = _plan(layout, kind)
            self._vals = None
        plan = self._plan
        if not plan:
            return EMPTY
        parts = (body, choice, delta, lp)
        vals = [parts[i][k] for i, k in plan]
        if vals != self._vals:
            self._vals = vals
            levels: list[dict[str, Any]] = [{}, {}, {}, {}]
            for (i, k), v in zip(plan, vals, strict=True):
                levels[i][k] = v
            top, own, inner, logprobs = levels
            if inner:
                own["delta"] = inner
            if logprobs:
                own["logprobs"] = logprobs
            if own:
                top["choices"] = [own]
            self.last = _deep_freeze(top)
        return self.last


def _plan(layout: tuple[Any, ...], kind: str) -> list[tuple[int, str]]:
    """``(level, key)`` of the unmodelled keys in a :class:`PassthroughMemo` layout."""
    known = (_TOP, _CHOICE, _MESSAGE, _LOGPROBS[kind])
    plan: list[tuple[int, str]] = []
    level = 0
    for key in layout:
        if key is None:
            level += 1
        elif key not in known[level]:
            plan.append((level, key))
    return plan


_NONE: Mapping[str, Any] = EMPTY


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


def _parse_choice(
    choice: Any, *, kind: str, endpoint: str, where: str
) -> tuple[str, tuple[ToolCall, ...], str | None, tuple[TokenLogprob, ...] | None]:
    """``(text, tool calls, reasoning, logprobs)`` of one choice of a non-streamed body."""
    _expect(isinstance(choice, Mapping), f"{where} is not an object", endpoint)
    calls: tuple[ToolCall, ...] = ()
    reasoning = None
    if kind == "chat":
        msg = choice.get("message")
        _expect(isinstance(msg, Mapping), f"{where}.message is missing", endpoint)
        text = msg.get("content") or ""
        calls = _tool_calls(msg.get("tool_calls"), endpoint)
        reasoning = _reasoning(msg)
        logprobs = _chat_logprobs(choice.get("logprobs")) if choice.get("logprobs") else None
    else:
        text = choice.get("text")
        _expect(isinstance(text, str), f"{where}.text is missing", endpoint)
        logprobs = _completion_logprobs(choice.get("logprobs")) if choice.get("logprobs") else None
    _expect(isinstance(text, str), "the answer text is not a string", endpoint)
    return text, calls, reasoning, logprobs


def parse_completion(body: Any, *, kind: str, endpoint: str) -> Completion:
    """Parse a non-streamed body (text, finish reason, usage, logprobs, model, id, and for
    chat the tool calls and reasoning text; every further choice; the passthrough)."""
    _expect(
        isinstance(body, Mapping), f"expected a JSON object, got {type(body).__name__}", endpoint
    )
    choices = body.get("choices")
    _expect(isinstance(choices, list) and len(choices) > 0, "no 'choices' in the body", endpoint)
    text, calls, reasoning, logprobs = _parse_choice(
        choices[0], kind=kind, endpoint=endpoint, where="choices[0]"
    )
    more = []
    for i, raw in enumerate(choices[1:], 1):
        t, c, r, lp = _parse_choice(raw, kind=kind, endpoint=endpoint, where=f"choices[{i}]")
        index = raw.get("index", i)
        more.append(
            Choice(index if isinstance(index, int) else i, t, raw.get("finish_reason"), lp, c, r)
        )
    usage_raw = body.get("usage")
    usage = parse_usage(usage_raw if isinstance(usage_raw, Mapping) else None)
    return Completion(
        text,
        choices[0].get("finish_reason"),
        usage,
        logprobs,
        str(body.get("model", "")),
        body.get("id"),
        calls,
        reasoning,
        tuple(more),
        passthrough_of(body, kind),
    )


def parse_chunk(
    body: Any, *, kind: str, endpoint: str, index: int, memo: PassthroughMemo | None = None
) -> tuple[Chunk | None, Usage | None, str | None]:
    """Parse one SSE ``data:`` object into ``(chunk or None, usage or None, model)``.

    With a ``memo`` the chunk carries the event's unmodelled fields (top level and its
    choice's) in ``passthrough``; the chunk's ``choice`` is the event choice's ``index``.
    """
    # Per token: ``type(x) is dict`` first (what orjson and json return), because an ABC
    # ``isinstance(x, Mapping)`` costs ~0.3 µs and this runs five times an event.
    if type(body) is not dict:
        _expect(isinstance(body, Mapping), "a stream event is not a JSON object", endpoint)
    usage_raw = body.get("usage")
    usage = (
        parse_usage(usage_raw)
        if usage_raw is not None and (type(usage_raw) is dict or isinstance(usage_raw, Mapping))
        else None
    )
    choices = body.get("choices") or []
    if type(choices) is not list:
        _expect(isinstance(choices, list), "a stream event's 'choices' is not a list", endpoint)
    if not choices:
        return None, usage, body.get("model")
    choice = choices[0]
    if type(choice) is not dict:
        _expect(isinstance(choice, Mapping), "a stream event's choice is not an object", endpoint)
    deltas: tuple[ToolCallDelta, ...] = ()
    reasoning = ""
    raw_lps = choice.get("logprobs")
    if kind == "chat":
        delta = choice.get("delta") or {}
        if type(delta) is not dict:
            _expect(isinstance(delta, Mapping), "a stream event's delta is not an object", endpoint)
        text = delta.get("content") or ""
        if "tool_calls" in delta:
            deltas = _tool_deltas(delta["tool_calls"], endpoint)
        if "reasoning_content" in delta or "reasoning" in delta:
            reasoning = _reasoning(delta) or ""
        lps = _chat_logprobs(raw_lps) if raw_lps is not None else ()
    else:
        text = choice.get("text") or ""
        lps = _completion_logprobs(raw_lps)
    finish = choice.get("finish_reason")
    if not text and finish is None and not lps and not deltas and not reasoning:
        return None, usage, body.get("model")
    at = choice.get("index", 0)
    passthrough = EMPTY if memo is None else memo.of(body, choice, kind)
    chunk = Chunk(
        str(text),
        index,
        lps,
        finish,
        deltas,
        reasoning,
        at if isinstance(at, int) else 0,
        passthrough,
    )
    return chunk, usage, body.get("model")
