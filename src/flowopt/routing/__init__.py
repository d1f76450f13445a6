"""Routing: cheap-model triage, cascades, prices, and the steering terminal.

    triage      a classifier (rules, embedding kNN router, LLM judge) picks a tier
    cascade     cheapest tier first, escalate on low logprob confidence or a verifier's no
    pricing     price per 1K tokens or per GPU-second; cost and always-strongest cost

A layer chooses a tier by setting ``Request.route`` (:meth:`flowopt.types.Request.routed`,
which leaves a pinned request alone); the steering terminal
(:mod:`flowopt.middleware.steer`) dispatches on it, below every other layer.

Heavy parts (the embedding model) load lazily, on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Cascade", "Price", "Tier", "Triage"]


def __getattr__(name: str) -> Any:
    if name == "Triage":
        from flowopt.routing.triage import Triage

        return Triage
    if name == "Cascade":
        from flowopt.routing.cascade import Cascade

        return Cascade
    if name in ("Price", "Tier"):
        from flowopt.routing import pricing

        return getattr(pricing, name)
    raise AttributeError(name)
