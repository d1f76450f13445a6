"""Frozen value types that flow through a middleware stack.

A :class:`Request` goes in, a :class:`Response` comes out. Both are frozen so a middleware
can never change what another one already saw; to change a request, build a new one with
:meth:`Request.replace`. Streaming is a property of the response, not a second API: a
streamed response carries a :class:`~flowopt.stream.Stream` of :class:`Chunk` and becomes
complete when the stream is consumed (see :mod:`flowopt.stream`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from flowopt._answer import EMPTY as _EMPTY
from flowopt._answer import Choice, Chunk, Decision, TokenLogprob, Usage
from flowopt._answer import freeze as _freeze
from flowopt.errors import InvalidRequestError
from flowopt.messages import Message, ToolCall, ToolCallDelta, _deep_freeze, thaw

if TYPE_CHECKING:
    from flowopt.stream import Stream

__all__ = [
    "Choice",
    "Chunk",
    "Decision",
    "Message",
    "Params",
    "Request",
    "Response",
    "TokenLogprob",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]


@dataclass(frozen=True, slots=True)
class Params:
    """Sampling and decoding parameters. ``None`` means "the server's default".

    ``extra`` is passed through to the server unchanged (vLLM's ``structured_outputs``,
    ``top_k``...). It is part of the cache key like every other field.
    """

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    response_format: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise InvalidRequestError(
                f"temperature {self.temperature} is outside [0, 2]",
                hint="use 0 for greedy",
                param="temperature",
            )
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InvalidRequestError(
                f"max_tokens must be >= 1, got {self.max_tokens}",
                hint="omit it for the default",
                param="max_tokens",
            )
        if self.top_logprobs is not None and not 0 <= self.top_logprobs <= 20:
            raise InvalidRequestError(
                f"top_logprobs must be in [0, 20], got {self.top_logprobs}",
                hint="vLLM returns at most 20 alternatives per token",
                param="top_logprobs",
            )
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "extra", _freeze(self.extra))
        if self.response_format is not None:
            object.__setattr__(self, "response_format", _freeze(self.response_format))

    @classmethod
    def parse(cls, value: Params | Mapping[str, Any]) -> Params:
        """A Params, or one built from a mapping (an unknown key is an InvalidRequestError
        that lists the known ones)."""
        if isinstance(value, Params):
            return value
        try:
            return cls(**value)
        except TypeError as exc:
            raise InvalidRequestError(
                f"unknown sampling parameter: {exc}",
                hint="params take temperature, top_p, max_tokens, stop, seed, logprobs, "
                "top_logprobs, response_format, extra",
            ) from None

    @property
    def n(self) -> int:
        """How many choices the request asks for: OpenAI's ``n``, which travels in
        ``extra`` like every engine field flowopt does not interpret (1 when unset or not
        an integer; the engine judges a bad value)."""
        n = self.extra.get("n")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1

    @property
    def is_sampled(self) -> bool:
        """True when the answer is random: temperature unset (server default 1.0) or > 0."""
        return self.temperature is None or self.temperature > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the set fields, in a stable order (used for keys and YAML)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or v == () or v is False or (f.name == "extra" and not v):
                continue
            if isinstance(v, Mapping):
                v = dict(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out


def _tools(tools: Any) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(tools, list | tuple):
        raise InvalidRequestError(
            "tools must be a list of tool definitions",
            hint="[{'type': 'function', 'function': {'name': ..., 'parameters': {...}}}]",
            param="tools",
        )
    if isinstance(tools, tuple) and all(isinstance(t, MappingProxyType) for t in tools):
        return tools
    out = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise InvalidRequestError(
                f"tools[{i}] needs 'function': {{'name': ...}}",
                hint="[{'type': 'function', 'function': {'name': ..., 'parameters': {...}}}]",
                param=f"tools[{i}]",
            )
        out.append(_deep_freeze(t))
    return tuple(out)


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True, slots=True)
class Request:
    """One LLM call: chat (``messages``) or completion (``prompt``), never both.

    ``tenant`` and ``user`` are identity, not content: caches and limits partition by
    them, and they are never embedded. ``template`` is a stable id of the prompt template
    that produced the messages (a step name + template hash): caches key on it so a changed
    template never serves an old answer. ``deadline`` is an absolute ``time.monotonic()``
    value that every hop must respect. ``tools``, ``tool_choice`` and
    ``parallel_tool_calls`` are OpenAI's, passed to the server as given (and part of every
    cache key).

    Routing is typed, and decided in one place (the steering terminal,
    :mod:`flowopt.middleware.steer`, dispatches on it):

    - ``route``: the backend (tier) name to call; ``None`` is the pipeline's default.
      Middleware choose with :meth:`routed` (triage, cascade, fallback).
    - ``pinned``: the route was fixed by whoever built the request (a step declared with
      ``backend: strong``, a gateway client naming a tier's model). :meth:`routed` leaves a
      pinned request where it is, so no layer can move it to another backend.
    - ``avoid``: ``{endpoint_url: monotonic_until}``, endpoints that must get no request
      (cooling down after a 429, circuit open, just failed). A backend with replicas picks
      among the others; when all are avoided the terminal refuses without network I/O.
    - ``purpose``: why the call exists when it is not the step's own answer, e.g.
      ``"triage-judge"`` or ``"cascade-verifier"`` for side calls (they travel through the
      layers below the middleware that makes them, so they are traced, limited and retried).
    """

    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    model: str | None = None
    params: Params = field(default_factory=Params)
    stream: bool = False
    tenant: str | None = None
    user: str | None = None
    template: str | None = None
    step: str | None = None
    priority: int = 0
    deadline: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    request_id: str = field(default_factory=_new_id)
    route: str | None = None
    pinned: bool = False
    avoid: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    purpose: str | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    def __post_init__(self) -> None:
        if self.tools:  # frozen once; a replace() finds them frozen and keeps them
            object.__setattr__(self, "tools", _tools(self.tools))
        if isinstance(self.tool_choice, Mapping) and not isinstance(
            self.tool_choice, MappingProxyType
        ):
            object.__setattr__(self, "tool_choice", _deep_freeze(self.tool_choice))
        if isinstance(self.params, Mapping):
            object.__setattr__(self, "params", Params.parse(self.params))
        if not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(Message.parse(m) for m in self.messages))
        if self.prompt is None and not self.messages:
            raise InvalidRequestError(
                "a request needs messages (chat) or a prompt (completion)",
                hint="pass messages=[{'role': 'user', 'content': '...'}] or prompt='...'",
            )
        if self.prompt is not None and self.messages:
            raise InvalidRequestError(
                "a request has both messages and a prompt",
                hint="use messages for chat models, prompt for plain completions",
            )
        object.__setattr__(self, "metadata", _freeze(self.metadata))
        object.__setattr__(self, "avoid", _freeze(self.avoid))
        if self.pinned and self.route is None:
            raise InvalidRequestError(
                "a pinned request needs a route",
                hint="pass route='backend-name' with pinned=True",
            )

    # -- routing -----------------------------------------------------------------------
    def routed(self, backend: str) -> Request:
        """This request sent to ``backend``, unless its route is pinned (then unchanged)."""
        if self.pinned or self.route == backend:
            return self
        return dataclasses.replace(self, route=backend)

    def pinned_to(self, backend: str) -> Request:
        """This request pinned to ``backend`` (what a caller naming the backend means).

        Every gateway request is pinned, so this is on the hot path: the copy is made
        field by field instead of with ``dataclasses.replace``, which re-runs
        ``__init__`` and the checks of ``__post_init__`` (the fields are already
        checked and frozen; a non-empty route is what a pin needs) at ~5x the cost.
        """
        if self.pinned and self.route == backend:
            return self
        if type(self) is not Request:  # a subclass may have fields of its own
            return dataclasses.replace(self, route=backend, pinned=True)
        new = object.__new__(Request)
        set_ = object.__setattr__
        for name in _REQUEST_FIELDS:
            set_(new, name, getattr(self, name))
        set_(new, "route", backend)
        set_(new, "pinned", True)
        return new

    def avoiding(self, endpoints: Mapping[str, float]) -> Request:
        """Add ``{url: monotonic_until}`` to :attr:`avoid`, keeping the later deadline."""
        if not endpoints:
            return self
        merged = dict(self.avoid)
        for url, until in endpoints.items():
            merged[url] = max(until, merged.get(url, until))
        return dataclasses.replace(self, avoid=merged)

    def avoided(self, now: float | None = None) -> dict[str, float]:
        """Endpoints still to be avoided at ``now``: ``{url: seconds_left}``."""
        if not self.avoid:
            return {}
        t = time.monotonic() if now is None else now
        return {u: until - t for u, until in self.avoid.items() if until > t}

    # -- convenience -------------------------------------------------------------------
    @classmethod
    def chat(cls, messages: Any, **kw: Any) -> Request:
        """Build a chat request from a string, a list of dicts/Messages, or a Message."""
        if isinstance(messages, str):
            msgs: tuple[Message, ...] = (Message("user", messages),)
        elif isinstance(messages, Message):
            msgs = (messages,)
        else:
            try:
                items = list(messages)
            except TypeError:
                raise InvalidRequestError(
                    f"messages must be a list, got {type(messages).__name__}",
                    hint="pass a list of {'role': ..., 'content': ...} dicts",
                ) from None
            msgs = tuple(Message.parse(m) for m in items)
        return cls(messages=msgs, **kw)

    @property
    def uses_tools(self) -> bool:
        """True when the model may call tools, or the conversation holds tool turns."""
        return bool(self.tools) or any(m.tool_calls or m.role == "tool" for m in self.messages)

    def tools_payload(self) -> dict[str, Any]:
        """``tools``, ``tool_choice`` and ``parallel_tool_calls`` as the wire spells them
        (only those that are set)."""
        out: dict[str, Any] = {}
        if self.tools:
            out["tools"] = [thaw(t) for t in self.tools]
        if self.tool_choice is not None:
            out["tool_choice"] = thaw(self.tool_choice)
        if self.parallel_tool_calls is not None:
            out["parallel_tool_calls"] = self.parallel_tool_calls
        return out

    @property
    def kind(self) -> Literal["chat", "completion"]:
        return "completion" if self.prompt is not None else "chat"

    def replace(self, **changes: Any) -> Request:
        """A copy with some fields changed (the request id is kept unless given)."""
        return dataclasses.replace(self, **changes)

    def with_params(self, **changes: Any) -> Request:
        return dataclasses.replace(self, params=dataclasses.replace(self.params, **changes))

    @property
    def system_prompt(self) -> str:
        return "\n".join(m.text for m in self.messages if m.role in ("system", "developer"))

    @property
    def last_user_text(self) -> str:
        """The text a semantic cache or router looks at: the last user turn (or prompt)."""
        if self.prompt is not None:
            return self.prompt
        for m in reversed(self.messages):
            if m.role == "user":
                return m.text
        return ""

    def remaining(self) -> float | None:
        """Seconds left before the deadline (may be negative), or None without one."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def content_hash(self) -> str:
        """A hash of everything that determines the answer except identity fields."""
        payload = {
            "messages": [m.to_openai() for m in self.messages],
            "prompt": self.prompt,
            "model": self.model,
            "params": self.params.to_dict(),
            **self.tools_payload(),
        }
        raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


_REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(Request))


@dataclass(frozen=True, slots=True)
class Response:
    """A complete answer, or (when ``stream`` is set) a handle on one still arriving.

    For a streamed response, iterate ``response.stream`` for chunks, or
    ``await response.complete()`` for the finished :class:`Response` (whose ``stream`` is
    ``None``). The fields of a streaming handle other than ``model``, ``backend``,
    ``endpoint`` and ``decisions`` are placeholders until then.

    An answer that calls tools has ``tool_calls`` (and ``finish_reason`` ``"tool_calls"``;
    its ``text`` is usually empty). ``reasoning_content`` is the server's reasoning text
    when it separates it (vLLM's reasoning parsers).

    A response is its first choice; a request for several (OpenAI's ``n`` in
    ``params.extra``) gets the others in ``extra_choices`` (:attr:`choices` lists all).

    ``passthrough`` holds what the engine sent that flowopt does not model
    (``system_fingerprint``, a message's ``refusal`` and ``annotations``, vLLM's
    ``stop_reason``, ``prompt_logprobs``, ``kv_transfer_params``...), read-only, as a
    sparse mirror of the engine's body: ``{"system_fingerprint": ..., "choices":
    ({"stop_reason": None, "message": {"refusal": None}},), "usage":
    {"prompt_tokens_details": {...}}}``. The gateway merges it back into the answer it
    writes, so a client gets the engine's fields; an answer no engine wrote (a cache hit,
    a graph run) has none.
    """

    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = "stop"
    decisions: tuple[Decision, ...] = ()
    latency_ms: float | None = None
    ttft_ms: float | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    backend: str | None = None
    endpoint: str | None = None
    cached: bool = False
    cost: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    stream: Stream | None = field(default=None, compare=False, repr=False)
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning_content: str | None = None
    extra_choices: tuple[Choice, ...] = ()
    passthrough: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _freeze(self.metadata))
        if self.passthrough and not isinstance(self.passthrough, MappingProxyType):
            object.__setattr__(self, "passthrough", _deep_freeze(self.passthrough))

    @property
    def choices(self) -> tuple[Choice, ...]:
        """Every choice, this response's own first: one unless the request set ``n``."""
        first = Choice(
            0,
            self.text,
            self.finish_reason,
            self.logprobs,
            self.tool_calls,
            self.reasoning_content,
        )
        return (first, *self.extra_choices)

    @property
    def is_streaming(self) -> bool:
        return self.stream is not None and not self.stream.done

    @property
    def truncated(self) -> bool:
        """True when generation stopped on the token limit or was cut off."""
        return self.finish_reason in ("length", "aborted", "incomplete")

    def replace(self, **changes: Any) -> Response:
        return dataclasses.replace(self, **changes)

    def with_decision(self, decision: Decision) -> Response:
        """A copy with one more decision. On a streaming handle the decision is also
        added to the final response when the stream completes."""
        if self.stream is not None and not self.stream.done:
            self.stream.add_decision(decision)
        return dataclasses.replace(self, decisions=(*self.decisions, decision))

    async def complete(self) -> Response:
        """The finished response: consumes the stream if there is one."""
        if self.stream is None:
            return self
        return await self.stream.collect()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``flowopt run --json`` prints)."""
        out: dict[str, Any] = {
            "text": self.text,
            "model": self.model,
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
            },
            "finish_reason": self.finish_reason,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "decisions": [d.to_dict() for d in self.decisions],
            "cached": self.cached,
        }
        if self.ttft_ms is not None:
            out["ttft_ms"] = round(self.ttft_ms, 3)
        if self.cost is not None:
            out["cost"] = self.cost
        if self.backend:
            out["backend"] = self.backend
        if self.tool_calls:
            out["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        if self.extra_choices:
            out["extra_choices"] = [
                {"index": c.index, "text": c.text, "finish_reason": c.finish_reason}
                for c in self.extra_choices
            ]
        return out
