"""Routing: cheap-model triage, cascades, prices, and the steering terminal.

    triage      a classifier (rules, embedding kNN router, LLM judge) picks a tier
    cascade     cheapest tier first, escalate on low logprob confidence or a verifier's no
    pricing     price per 1K tokens or per GPU-second; cost and always-strongest cost
    steer       the terminal that dispatches to the tier a layer chose (ROUTE_KEY)

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
