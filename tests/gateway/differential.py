"""Helpers of the differential suite (``test_differential.py``): send one request to the
engine and to the gateway, reduce both answers to comparable shapes, and list every
difference by its JSON path.

Why reduce streams instead of comparing event by event: the gateway writes one event per
engine event that carries something, and skips the engine's empty ones (a delta with
nothing in it), so the event *count* may differ while every client assembles the same
answer. A stream is compared as what a client builds from it — text, tool calls,
logprobs and finish reason per choice, the usage event — plus the set of fields its events
carry (every JSON path that occurs, so a dropped field still shows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["IGNORED", "Answer", "diff", "paths", "post", "reduce_stream"]

# Legitimately different on every call, direct or not: ids (the answer's, a tool call's, a
# model permission's), timestamps, and flowopt's own extension field.
IGNORED = frozenset({"id", "created", "flowopt"})
# The engine's own state: the second of two identical requests finds the first one's
# prompt in the prefix cache (both sides are the same engine), so only presence counts.
STATE = (".prompt_tokens_details.cached_tokens", ".prompt_tokens_details.created_cache_tokens")
FLOAT_TOLERANCE = 1e-3  # logprobs: the same engine computes them; batching may move digits


@dataclass
class Answer:
    status: int
    body: Any  # the JSON body, or the reduced stream


def post(client: httpx.Client, base: str, path: str, body: dict[str, Any]) -> Answer:
    """POST ``body``; a stream (status 200 and ``stream: true``) comes back reduced."""
    if body.get("stream"):
        with client.stream("POST", f"{base}{path}", json=body) as resp:
            if resp.status_code != 200:
                resp.read()
                return Answer(resp.status_code, resp.json())
            events = []
            for line in resp.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    events.append(json.loads(line[6:]))
            return Answer(200, reduce_stream(events))
    resp = client.post(f"{base}{path}", json=body)
    return Answer(resp.status_code, resp.json())


def paths(obj: Any, prefix: str = "") -> set[str]:
    """Every JSON path in ``obj`` (list positions collapsed to ``[]``), IGNORED keys left
    out."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in IGNORED:
                continue
            p = f"{prefix}.{k}"
            out.add(p)
            out |= paths(v, p)
    elif isinstance(obj, list):
        for v in obj:
            out |= paths(v, prefix + "[]")
    return out


def reduce_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What a client assembles from a stream, plus the fields its events carry."""
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    seen: set[str] = set()
    for e in events:
        seen |= paths(e)
        if e.get("usage") is not None:
            usage = {k: v for k, v in e.items() if k not in IGNORED and k != "choices"}
        for ch in e.get("choices") or []:
            slot = choices.setdefault(
                ch["index"], {"text": "", "finish_reason": None, "tool_calls": {}, "logprobs": []}
            )
            delta = ch.get("delta")
            if delta is None:  # a completion
                slot["text"] += ch.get("text") or ""
            else:
                slot["text"] += delta.get("content") or ""
                if delta.get("role"):
                    slot["role"] = delta["role"]
                for d in delta.get("tool_calls") or []:
                    call = slot["tool_calls"].setdefault(d["index"], {"name": "", "arguments": ""})
                    fn = d.get("function") or {}
                    call["name"] += fn.get("name") or ""
                    call["arguments"] += fn.get("arguments") or ""
            lp = ch.get("logprobs")
            if isinstance(lp, dict):
                slot["logprobs"].extend(lp.get("content") or lp.get("tokens") or [])
            if ch.get("finish_reason") is not None:
                slot["finish_reason"] = ch["finish_reason"]
            for k in ("stop_reason",):
                if k in ch and ch.get("finish_reason") is not None:
                    slot[k] = ch[k]
    return {
        "choices": [choices[i] for i in sorted(choices)],
        "usage": usage,
        "fields": sorted(seen),
    }


def diff(direct: Any, via: Any, path: str = "") -> list[str]:
    """Every difference between the engine's answer and the gateway's, by JSON path."""
    if isinstance(direct, dict) and isinstance(via, dict):
        out: list[str] = []
        for k in sorted(set(direct) | set(via), key=str):
            if k in IGNORED:
                continue
            p = f"{path}.{k}"
            if k not in via:
                out.append(f"{p}: only direct")
            elif k not in direct:
                out.append(f"{p}: only through the gateway")
            else:
                out.extend(diff(direct[k], via[k], p))
        return out
    if isinstance(direct, list) and isinstance(via, list):
        if path.endswith(".fields"):  # sets of field paths: name each one missing
            return [f"{path}: {f} only direct" for f in sorted(set(direct) - set(via))] + [
                f"{path}: {f} only through the gateway" for f in sorted(set(via) - set(direct))
            ]
        if len(direct) != len(via):
            return [f"{path}: {len(direct)} items direct, {len(via)} through the gateway"]
        return [
            d
            for i, (a, b) in enumerate(zip(direct, via, strict=True))
            for d in diff(a, b, f"{path}[{i}]")
        ]
    if path.endswith(STATE):
        return []
    if isinstance(direct, float) and isinstance(via, float):
        return [] if abs(direct - via) <= FLOAT_TOLERANCE else [f"{path}: {direct} vs {via}"]
    return [] if direct == via else [f"{path}: {direct!r} direct, {via!r} through the gateway"]
