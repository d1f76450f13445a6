"""Chat messages as OpenAI defines them: text or content parts, tool calls, tool results.

Why a module of its own: agents send far more than ``{role, content}`` and flowopt must
pass every part of it through untouched (an image part, an assistant turn whose content is
``null`` because it only calls tools, the ``tool_call_id`` that ties a result to its call).
A middleware that needs *text* (a cache key, a router, a token estimate) reads
:attr:`Message.text`; the wire always gets :meth:`Message.to_openai`, which is what the
client sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from flowopt.errors import InvalidRequestError

__all__ = [
    "Message",
    "Role",
    "ToolCall",
    "ToolCallDelta",
    "assemble_tool_calls",
    "check_tool_turns",
    "thaw",
]

Role = Literal["system", "developer", "user", "assistant", "tool"]
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Message keys with a typed field; anything else a client sends travels in ``extra``.
_TYPED = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content"})


def _deep_freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _deep_freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_deep_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain ``dict``/``list`` copies of frozen values, ready for JSON."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call an assistant turn asked for. ``arguments`` is the JSON text the
    model produced, kept verbatim (re-serialising it would change what the model sees on
    the next turn); :meth:`parsed_arguments` reads it."""

    id: str
    name: str
    arguments: str = "{}"
    type: str = "function"

    def parsed_arguments(self) -> Any:
        """The arguments as Python values; ``InvalidRequestError`` when they are not JSON."""
        try:
            return json.loads(self.arguments) if self.arguments.strip() else {}
        except ValueError:
            raise InvalidRequestError(
                f"tool call {self.id!r} ({self.name}) has arguments that are not JSON: "
                f"{self.arguments[:80]!r}",
                hint="function.arguments must be a JSON object encoded as a string",
            ) from None

    @classmethod
    def parse(cls, value: Any, where: str = "tool_calls") -> ToolCall:
        """Read an OpenAI ``{"id", "type", "function": {"name", "arguments"}}`` object."""
        if isinstance(value, ToolCall):
            return value
        fn = value.get("function") if isinstance(value, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise InvalidRequestError(
                f"{where}: a tool call needs 'function': {{'name': ..., 'arguments': ...}}",
                hint="write tool calls as OpenAI does: "
                "{'id': 'call_1', 'type': 'function', 'function': {'name': 'f', "
                "'arguments': '{}'}}",
                param=where,
            )
        args = fn.get("arguments", "{}")
        if isinstance(args, Mapping):  # a dict is what some clients send: keep it as JSON
            args = json.dumps(dict(args), ensure_ascii=False)
        if not isinstance(args, str):
            raise InvalidRequestError(
                f"{where}.function.arguments must be a JSON string",
                hint="encode the arguments object with json.dumps",
                param=f"{where}.function.arguments",
            )
        cid = value.get("id")  # type: ignore[union-attr]
        if not isinstance(cid, str) or not cid:
            raise InvalidRequestError(
                f"{where}.id must be a non-empty string",
                hint="every tool call needs the id its tool message will answer",
                param=f"{where}.id",
            )
        return cls(cid, fn["name"], args, str(value.get("type") or "function"))  # type: ignore[union-attr]

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece for an ``index`` carries the id and
    name, later ones append to the arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index}
        fn: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
            out["type"] = "function"
        if self.name is not None:
            fn["name"] = self.name
        fn["arguments"] = self.arguments
        out["function"] = fn
        return out

    @classmethod
    def whole(cls, index: int, call: ToolCall) -> ToolCallDelta:
        """One delta that carries a complete call (replaying a stored answer)."""
        return cls(index, call.id, call.name, call.arguments)


def assemble_tool_calls(deltas: Iterable[ToolCallDelta]) -> tuple[ToolCall, ...]:
    """Join streamed deltas into complete calls, by index, in index order."""
    parts: dict[int, list[Any]] = {}
    for d in deltas:
        slot = parts.setdefault(d.index, [None, None, []])
        if d.id:
            slot[0] = d.id
        if d.name and slot[1] is None:
            slot[1] = d.name
        elif d.name and d.name != slot[1]:  # a server that streams the name in pieces
            slot[1] += d.name
        slot[2].append(d.arguments)
    return tuple(
        ToolCall(slot[0] or f"call_{i}", slot[1] or "", "".join(slot[2]))
        for i, slot in sorted(parts.items())
    )


# The field each documented part type must carry (other types pass through unchecked).
_PART_FIELD = {
    "text": "text",
    "image_url": "image_url",
    "input_audio": "input_audio",
    "file": "file",
}


def _check_part(part: Mapping[str, Any], i: int) -> None:
    kind = part["type"]
    need = _PART_FIELD.get(kind)
    if need is None or need in part:
        if kind == "text" and not isinstance(part["text"], str):
            raise InvalidRequestError(
                f"content part {i} has a 'text' that is not a string",
                hint="{'type': 'text', 'text': '...'}",
                param=f"content[{i}].text",
            )
        return
    raise InvalidRequestError(
        f"content part {i} of type {kind!r} has no {need!r} field",
        hint=f"write it as {{'type': {kind!r}, {need!r}: ...}}",
        param=f"content[{i}].{need}",
    )


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message, as OpenAI's chat API defines it.

    ``content`` is a string, ``None`` (an assistant turn that only calls tools), or a tuple
    of content parts (``{"type": "text", ...}``, ``{"type": "image_url", ...}``...) passed
    to the server as given. :attr:`text` is the text view middleware reads (text parts
    joined with a newline, as vLLM's chat templates join them). ``extra`` keeps any other
    field a client sent (``refusal``, ``audio``...) so nothing is dropped on the way.
    """

    role: Role
    content: str | tuple[Mapping[str, Any], ...] | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    reasoning_content: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise InvalidRequestError(
                f"message role {self.role!r} is not one of {sorted(_ROLES)}",
                hint="use role 'system', 'developer', 'user', 'assistant' or 'tool'",
                param="role",
            )
        content = self.content
        if isinstance(content, list | tuple):
            for i, part in enumerate(content):
                if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                    raise InvalidRequestError(
                        f"content part {i} must be an object with a 'type'",
                        hint="write parts as {'type': 'text', 'text': '...'} or "
                        "{'type': 'image_url', 'image_url': {'url': '...'}}",
                        param=f"content[{i}]",
                    )
                _check_part(part, i)
            object.__setattr__(self, "content", _deep_freeze(list(content)))
        elif content is None:
            if self.role != "assistant":
                raise InvalidRequestError(
                    f"a {self.role} message needs content (only an assistant turn may be null)",
                    hint="pass the text, or an empty string",
                    param="content",
                )
        elif not isinstance(content, str):
            raise InvalidRequestError(
                f"message content must be a string, a list of parts or null, "
                f"got {type(content).__name__}",
                hint="pass text, or OpenAI content parts",
                param="content",
            )
        if not isinstance(self.tool_calls, tuple):
            object.__setattr__(
                self, "tool_calls", tuple(ToolCall.parse(c) for c in self.tool_calls)
            )
        if self.tool_calls and self.role != "assistant":
            raise InvalidRequestError(
                f"a {self.role} message cannot carry tool_calls",
                hint="only assistant turns call tools",
                param="tool_calls",
            )
        if self.extra:
            object.__setattr__(self, "extra", _deep_freeze(dict(self.extra)))

    @property
    def text(self) -> str:
        """The text of the message: the string, ``""`` for null, text parts joined."""
        c = self.content
        if isinstance(c, str):
            return c
        if c is None:
            return ""
        return "\n".join(str(p.get("text", "")) for p in c if p.get("type") == "text")

    @property
    def has_non_text_parts(self) -> bool:
        c = self.content
        return isinstance(c, tuple) and any(p.get("type") != "text" for p in c)

    @classmethod
    def parse(cls, value: Any) -> Message:
        """Accept a Message, an OpenAI-style dict, or a ``(role, content)`` pair."""
        if isinstance(value, Message):
            return value
        if isinstance(value, Mapping):
            if "role" not in value or ("content" not in value and "tool_calls" not in value):
                raise InvalidRequestError(
                    f"message {dict(value)!r} needs 'role' and 'content'",
                    hint="write messages as {'role': 'user', 'content': '...'}",
                )
            raw_calls = value.get("tool_calls") or ()
            if not isinstance(raw_calls, list | tuple):
                raise InvalidRequestError(
                    "tool_calls must be a list", hint="see OpenAI's chat API", param="tool_calls"
                )
            return cls(
                role=value["role"],
                content=value.get("content"),
                name=value.get("name"),
                tool_calls=tuple(
                    ToolCall.parse(c, f"tool_calls[{i}]") for i, c in enumerate(raw_calls)
                ),
                tool_call_id=value.get("tool_call_id"),
                reasoning_content=value.get("reasoning_content"),
                extra={k: v for k, v in value.items() if k not in _TYPED},
            )
        if isinstance(value, tuple | list) and len(value) == 2:
            return cls(role=value[0], content=value[1])
        raise InvalidRequestError(
            f"cannot read a message from {type(value).__name__}: {value!r}",
            hint="use Message(role, content), a dict with role/content, or a (role, content) pair",
        )

    def to_openai(self) -> dict[str, Any]:
        """The message as the client sent it (what goes to the server)."""
        c = self.content
        out: dict[str, Any] = {"role": self.role, "content": thaw(c) if isinstance(c, tuple) else c}
        if self.name:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = [t.to_openai() for t in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.reasoning_content is not None:
            out["reasoning_content"] = self.reasoning_content
        for k, v in self.extra.items():
            out[k] = thaw(v)
        return out


def check_tool_turns(messages: Sequence[Message]) -> None:
    """Refuse a conversation whose tool turns cannot be right: a tool message answering no
    earlier call, a tool message without its ``tool_call_id``, arguments that are not JSON.

    Raises :class:`InvalidRequestError` whose ``param`` names the field
    (``messages[3].tool_call_id``), so a gateway can answer an OpenAI-shaped 400.
    """
    called: set[str] = set()
    for i, m in enumerate(messages):
        for j, call in enumerate(m.tool_calls):
            try:
                call.parsed_arguments()
            except InvalidRequestError as exc:
                where = f"messages[{i}].tool_calls[{j}].function.arguments"
                raise InvalidRequestError(exc.message, hint=exc.hint, param=where) from None
            called.add(call.id)
        if m.role == "tool":
            if not m.tool_call_id:
                raise InvalidRequestError(
                    f"messages[{i}] is a tool message without a tool_call_id",
                    hint="a tool message answers one call: set tool_call_id to that call's id",
                    param=f"messages[{i}].tool_call_id",
                )
            if m.tool_call_id not in called:
                raise InvalidRequestError(
                    f"messages[{i}].tool_call_id {m.tool_call_id!r} matches no tool call in an "
                    "earlier assistant message",
                    hint="send the assistant message with its tool_calls before the tool results",
                    param=f"messages[{i}].tool_call_id",
                )
