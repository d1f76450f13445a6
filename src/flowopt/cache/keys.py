"""Keys: where a cached answer may be served (the partition) and what is "the same request".

Why a partition and not a filter: every rule that decides whether an answer may cross from
one request to another is folded into one opaque string, the *partition*. Stores search
only inside a partition, so no store, however it indexes, can return an entry from another
tenant, another model revision, another prompt template or other sampling parameters; a
bug in similarity or verification can at worst serve a wrong answer *to the same tenant
under the same model and template*, never across those boundaries.

The partition holds, hashed together:

- the scope: the tenant (and the user when ``scope="user"``); identity, never embedded text;
- the served model's identity (``ModelInfo.identity`` from ``/v1/models``) and the
  requested model name;
- the prompt template id, else a hash of the system prompt;
- the answer-changing parameters (everything in :class:`~flowopt.types.Params`);
- the request kind and, for the semantic tier, the conversation *before* the last user turn
  (a follow-up "and for kids?" means different things in different conversations), and
  the last user turn's non-text parts (an image);
- the tool definitions, ``tool_choice`` and ``parallel_tool_calls`` (an answer made with
  one tool set is never served to a request with another); tool call ids in the context
  are numbered in order (``call_0``...), because servers draw a new random id per call.

The exact key adds the canonical request content (the last user text, verbatim).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from flowopt.types import Message, Request

__all__ = ["CacheKey", "Scope", "cache_key", "scope_of"]

Scope = Literal["tenant", "user"]
ANONYMOUS = "-"


def _h(payload: Any, size: int = 16) -> str:
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(raw.encode(), digest_size=size).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheKey:
    """The keys of one request. ``tenant`` and ``model_identity`` are kept in clear next to
    the hashed partition so stores can invalidate by them."""

    partition: str
    exact: str
    tenant: str
    model_identity: str
    text: str


def scope_of(request: Request, scope: Scope) -> str:
    """The identity part of the partition: ``tenant`` or ``tenant/user``."""
    tenant = request.tenant or ANONYMOUS
    if scope == "user":
        return f"{tenant}/{request.user or ANONYMOUS}"
    return tenant


def _call_numbers(messages: list[Message]) -> dict[str, str]:
    """Tool call id -> ``call_<n>``, numbered in order of appearance. Servers make a fresh
    random id for every call, so the same conversation replayed by an agent carries other
    ids; what the id says (which result answers which call) is kept by the numbering."""
    out: dict[str, str] = {}
    for m in messages:
        for c in m.tool_calls:
            out.setdefault(c.id, f"call_{len(out)}")
    return out


def _keyed(message: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """``message`` (OpenAI form) with its tool call ids replaced by their numbers."""
    if not ids:
        return message
    if "tool_calls" in message:
        message["tool_calls"] = [
            {**c, "id": ids.get(c["id"], c["id"])} for c in message["tool_calls"]
        ]
    tcid = message.get("tool_call_id")
    if tcid is not None:
        message["tool_call_id"] = ids.get(tcid, tcid)
    return message


def cache_key(request: Request, *, model_identity: str, scope: Scope = "tenant") -> CacheKey:
    """Compute the partition and exact key of ``request`` (pure, ~10 µs)."""
    if request.prompt is not None:
        context: list[Any] = []
    else:
        msgs = list(request.messages)
        # Drop the last user turn (the semantic part); keep everything before it and
        # anything after it (an assistant prefill changes the answer).
        last_user = max((i for i, m in enumerate(msgs) if m.role == "user"), default=-1)
        ids = _call_numbers(msgs)
        context = [_keyed(m.to_openai(), ids) for i, m in enumerate(msgs) if i != last_user]
        if last_user >= 0 and msgs[last_user].has_non_text_parts:
            # An image (or audio) part is content too: only the same parts may match.
            context.append(msgs[last_user].to_openai())
    template = request.template or ("sys:" + _h(request.system_prompt, 8))
    partition = _h(
        {
            "scope": scope_of(request, scope),
            "model": model_identity,
            "requested_model": request.model,
            "template": template,
            "params": request.params.to_dict(),
            "kind": request.kind,
            "context": context,
            # A stored answer was made for these tools: another tool set never gets it.
            "tools": request.tools_payload(),
        }
    )
    text = request.last_user_text
    exact = _h({"p": partition, "t": text})
    return CacheKey(
        partition=partition,
        exact=exact,
        tenant=request.tenant or ANONYMOUS,
        model_identity=model_identity,
        text=text,
    )
