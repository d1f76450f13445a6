"""Resilience tests use the fault proxies (``proxy``, ``proxy2``) and the one-step
pipeline builder (``make_pipe``) of the top-level ``tests/conftest.py``; this file only
adds the request helper they share."""

from __future__ import annotations

from typing import Any

from flowopt.types import Params, Request

GREEDY = Params(temperature=0.0, max_tokens=4)


def chat(text: str = "Say hi", **kw: Any) -> Request:
    kw.setdefault("params", GREEDY)
    return Request.chat(text, **kw)
