"""The types of the request fields the gateway reads itself, checked once at the boundary.

Why a table and not ``try`` blocks where each field is used: a value of the wrong type
used to travel until something downstream tripped on it (``"role": []`` is unhashable,
``"response_format": "json"`` is not a mapping, ``"temperature": "hot"`` does not compare),
which gave a 500, or a 400 that named no field. Checking every field the gateway
interprets against the one shape OpenAI documents, before anything is built, gives each
mistake a 400 that names it (``param: "messages[2].role"``). Lenient coercions are
refused on purpose: ``"stream": "false"`` is a string, which Python reads as true, and a
client that sent it would get a stream it did not ask for.

Fields the gateway does not interpret go to the model server untouched (``Params.extra``);
the engine judges those.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flowopt.gateway._body import clip
from flowopt.gateway.errors import HTTPProblem

__all__ = ["check_fields"]

Check = Callable[[Any], bool]


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_object(v: Any) -> bool:
    return isinstance(v, Mapping)


def _is_stop(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v))


def _is_tools(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(t, Mapping) for t in v)


def _is_tool_choice(v: Any) -> bool:
    return isinstance(v, str | Mapping)


def _is_prompt(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and len(v) == 1 and isinstance(v[0], str))


def _is_completion_logprobs(v: Any) -> bool:
    return isinstance(v, bool | int)


# field -> (check, what it must be); null is always allowed (it means "the default").
_COMMON: dict[str, tuple[Check, str]] = {
    "model": (_is_str, "a string"),
    "user": (_is_str, "a string"),
    "stream": (_is_bool, "a boolean (true or false, not a string)"),
    "stream_options": (_is_object, "an object"),
    "temperature": (_is_number, "a number"),
    "top_p": (_is_number, "a number"),
    "max_tokens": (_is_int, "an integer"),
    "max_completion_tokens": (_is_int, "an integer"),
    "seed": (_is_int, "an integer"),
    "top_logprobs": (_is_int, "an integer"),
    "stop": (_is_stop, "a string or a list of strings"),
    "response_format": (_is_object, 'an object such as {"type": "json_object"}'),
    "n": (_is_int, "an integer"),
}
_CHAT: dict[str, tuple[Check, str]] = {
    **_COMMON,
    "logprobs": (_is_bool, "a boolean"),
    "tools": (_is_tools, "a list of tool objects"),
    "tool_choice": (_is_tool_choice, "a string or an object"),
    "parallel_tool_calls": (_is_bool, "a boolean"),
}
_COMPLETION: dict[str, tuple[Check, str]] = {
    **_COMMON,
    "logprobs": (_is_completion_logprobs, "an integer"),
    "prompt": (_is_prompt, "a string"),
}
_MESSAGE: dict[str, tuple[Check, str]] = {
    "role": (_is_str, "a string"),
    "name": (_is_str, "a string"),
    "tool_call_id": (_is_str, "a string"),
    "tool_calls": (_is_tools, "a list of tool call objects"),
}


def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(v), "object" if isinstance(v, Mapping) else type(v).__name__
    )


def _check(table: Mapping[str, tuple[Check, str]], obj: Mapping[str, Any], prefix: str) -> None:
    for name, (ok, expected) in table.items():
        value = obj.get(name)
        if value is not None and not ok(value):
            param = f"{prefix}{name}"
            raise HTTPProblem(
                400,
                f"'{param}' must be {expected}, got {_type_name(value)} {clip(value, 60)}",
                param=param,
            )


def check_fields(body: Mapping[str, Any], kind: str) -> None:
    """Raise a 400 naming the first field the gateway reads whose type is wrong."""
    _check(_CHAT if kind == "chat" else _COMPLETION, body, "")
    opts = body.get("stream_options")
    usage = opts.get("include_usage") if isinstance(opts, Mapping) else None
    if usage is not None and not isinstance(usage, bool):
        raise HTTPProblem(
            400,
            "'stream_options.include_usage' must be a boolean",
            param="stream_options.include_usage",
        )
    messages = body.get("messages")
    if kind == "chat" and isinstance(messages, list):
        for i, m in enumerate(messages):
            if isinstance(m, Mapping):
                _check(_MESSAGE, m, f"messages[{i}].")
                content = m.get("content")
                if content is not None and not isinstance(content, str | list):
                    raise HTTPProblem(
                        400,
                        f"'messages[{i}].content' must be a string or a list of content parts",
                        param=f"messages[{i}].content",
                    )
