"""Function steps used by the bundled demo spec (``flowopt demo``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["POLICIES", "lookup_policy"]

POLICIES = {
    "billing": "Refunds are issued within 5 business days to the original payment method.",
    "shipping": "Orders ship within 2 days; tracking links arrive by e-mail.",
    "account": "Passwords can be reset from the login page with the 'Forgot password' link.",
}


def lookup_policy(state: Mapping[str, Any]) -> str:
    """Pick the policy snippet for the topic the classify step chose."""
    topic = str(state.get("topic", "")).strip().lower()
    for key, text in POLICIES.items():
        if key in topic:
            return text
    return "Be polite and ask the customer for details."
