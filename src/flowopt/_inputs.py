"""Run inputs: how text, a mapping or a chat becomes a run's state, and what an LLM step
sends for a chat. Kept apart from :mod:`flowopt.pipeline` (which owns the stack and the
graph) because these are pure functions of the spec and the input.

A run starts from text (``"question"``), a mapping with ``input``
(``{"input": "question", ...}``), or a **chat**: a list of messages (OpenAI dicts,
:class:`~flowopt.types.Message` or ``(role, content)`` pairs), or a mapping with
``messages``. A chat must end with a user turn (system messages may be anywhere). The state
then holds ``messages``, the conversation as plain ``{"role", "content"[, "name"]}`` dicts
(plain data, so LangGraph checkpointers can store it), and ``input``, the last user
message's text, so ``{input}`` templates work unchanged. Function steps see both.

An LLM step renders its ``system`` and ``prompt`` templates as for text. With a chat input
its request is:

1. one system message: the step's rendered ``system`` (if any), then the caller's system
   message(s), joined by blank lines (omitted when there are none);
2. the caller's history: every non-system message before the last user turn, as sent;
3. the step's rendered ``prompt`` as the final user turn. It *replaces* the caller's last
   turn, which the template reaches as ``{input}``; a prompt of exactly ``{input}`` thus
   sends the caller's own last turn (its ``name`` kept), never a duplicate.

Every LLM step sees the conversation this way. ``params=`` (the caller's sampling
parameters) applies to the **answer steps** only (:func:`answer_steps`: the LLM steps after
which the run can end), field by field over their spec params; steps in the middle
(classifiers, rewriters) keep their own. ``timeout=`` sets the deadline every LLM request of
the run carries (``Request.deadline``; the backend and resilience layers honour it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from flowopt.errors import InvalidRequestError
from flowopt.spec import PipelineSpec
from flowopt.types import Message, Params

__all__ = [
    "COMPRESS_MARKS",
    "Input",
    "answer_steps",
    "compress_marks",
    "initial_state",
    "run_params",
    "step_messages",
]

COMPRESS_MARKS = "flowopt.compress"
"""Request metadata key of the passages the compress middleware may shrink (here so the
pipeline can mark template fields without importing the compressor)."""

#: What a run starts from: text, ``{"input": ...}``, a chat (a list of messages) or
#: ``{"messages": [...]}``.
Input = str | Mapping[str, Any] | Sequence[Message | Mapping[str, Any]]


def initial_state(input: Input, *, thread_id: str | None = None) -> dict[str, Any]:
    """The graph's input state for ``input``: ``input`` (text) and, for a chat,
    ``messages`` (plain dicts). Raises :class:`InvalidRequestError` for anything else."""
    if isinstance(input, str):
        state: dict[str, Any] = {"input": input}
    elif isinstance(input, Mapping):
        state = dict(input)
        if state.get("messages") is not None:  # None: a text run's state, no chat
            state["messages"] = chat = _chat_input(state["messages"])
            state.setdefault("input", _last_user(chat))
        elif "input" not in state:
            raise InvalidRequestError(
                "a mapping input needs an 'input' key (or 'messages' for a chat)",
                hint="pass {'input': 'text', ...} or {'messages': [...], ...}",
            )
    elif isinstance(input, Sequence | Message) and not isinstance(input, bytes | bytearray):
        chat = _chat_input(input)
        state = {"messages": chat, "input": _last_user(chat)}
    else:
        raise InvalidRequestError(
            f"input must be text or a mapping, or a chat (a list of messages), "
            f"got {type(input).__name__}",
            hint="pass the user's question as a string, or the chat as a list of messages",
        )
    if thread_id is not None:
        # a checkpointed thread keeps the last run's state: a text run clears its chat
        state.setdefault("messages", None)
    return state


def step_messages(system: str | None, prompt: str, state: Mapping[str, Any]) -> list[Message]:
    """The messages an LLM step sends, from its rendered ``system`` and ``prompt`` and the
    run's chat (``state["messages"]``, if any): the rules in the module docstring."""
    chat = state.get("messages")
    if not chat:
        head = [Message("system", system)] if system else []
        return [*head, Message("user", prompt)]
    systems = [system] if system else []
    systems.extend(m["content"] for m in chat if m["role"] == "system")
    turns = [m for m in chat if m["role"] != "system"]
    last = turns[-1]  # a user turn: checked by _chat_input
    out = [Message("system", "\n\n".join(systems))] if systems else []
    out.extend(Message(m["role"], m["content"], m.get("name")) for m in turns[:-1])
    out.append(Message("user", prompt, last.get("name") if prompt == last["content"] else None))
    return out


def compress_marks(
    fields: Sequence[str], state: Mapping[str, Any], metadata: Mapping[str, Any]
) -> Mapping[str, Any]:
    """``metadata`` with the values of a step's ``compressible`` template ``fields`` marked
    as passages: a text value splits at blank lines (each paragraph is a passage the
    compressor can rank and drop), anything else is one passage as the template renders it.
    Marks already in ``metadata`` (a caller's :func:`flowopt.compress.mark`) come first.
    No fields: ``metadata`` itself."""
    if not fields:
        return metadata
    passages: list[str] = []
    for name in fields:
        value = state.get(name)
        text = value if isinstance(value, str) else "" if value is None else str(value)
        passages.extend(p.strip() for p in text.split("\n\n") if p.strip())
    out = dict(metadata)
    if passages:
        entry = dict(out.get(COMPRESS_MARKS) or {})
        entry["passages"] = [*entry.get("passages", ()), *passages]
        out[COMPRESS_MARKS] = entry
    return out


def run_params(
    params: Params | Mapping[str, Any] | None, answer: Mapping[str, Params]
) -> dict[str, Params]:
    """The caller's ``params`` merged field by field over each answer step's own params
    (``answer``: step name -> its params); empty when the caller sets none."""
    if params is None:
        return {}
    params = Params.parse(params)
    changes = params.to_dict()
    if not changes:
        return {}
    out: dict[str, Params] = {}
    for name, base in answer.items():
        extra = {**base.extra, **params.extra} if params.extra else base.extra
        out[name] = dataclasses.replace(base, **{**changes, "extra": extra})
    return out


def answer_steps(spec: PipelineSpec) -> frozenset[str]:
    """The LLM steps whose output can be the run's answer: those after which the run can
    end (the last step without edges; with edges or routes, a step with an edge to END,
    a route that can end, or no way out). A function step is never one."""
    llm = [s.name for s in spec.steps if s.kind == "llm"]
    if spec.edges is None and not spec.routes:
        last = spec.steps[-1].name
        return frozenset({last}) if last in llm else frozenset()
    ends = {a for a, b in spec.edges or () if b == "END"}
    has_out = {a for a, _ in spec.edges or ()} | {r.source for r in spec.routes}
    for r in spec.routes:
        if "END" in r.cases.values() or r.default in (None, "END"):
            ends.add(r.source)
    ends |= {name for name in llm if name not in has_out}
    return frozenset(ends & set(llm))


def _chat_input(value: Any) -> list[dict[str, Any]]:
    """A chat input as plain OpenAI dicts, checked: messages parse, the last turn is a user's."""
    if isinstance(value, Message):
        value = [value]
    if isinstance(value, str | bytes | bytearray) or not isinstance(value, Sequence):
        raise InvalidRequestError(
            f"'messages' must be a list of messages, got {type(value).__name__}",
            hint="pass [{'role': 'user', 'content': '...'}, ...]",
        )
    chat = [Message.parse(m).to_openai() for m in value]
    turns = [m for m in chat if m["role"] != "system"]
    if not turns or turns[-1]["role"] != "user":
        raise InvalidRequestError(
            "a chat input must end with a user message",
            hint="the last non-system message is the turn the pipeline answers",
        )
    return chat


def _last_user(chat: Sequence[Mapping[str, Any]]) -> str:
    return next(m["content"] for m in reversed(chat) if m["role"] == "user")  # type: ignore[no-any-return]
