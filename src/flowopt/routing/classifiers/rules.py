"""Rules: route by what is cheap to see — metadata, length, patterns.

First matching rule wins; no match gives ``default_score``. Rules are the right classifier
when you know your traffic (``metadata.tier`` set by the app, "code questions go large")
and cost microseconds; they are the wrong one for telling easy from hard questions of the
same shape (use the embedding router, measured in docs/triage.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowopt.errors import ConfigError
from flowopt.middleware.base import CallNext
from flowopt.routing.classifiers.base import Verdict
from flowopt.types import Request

__all__ = ["Rule", "RulesClassifier"]


@dataclass(frozen=True)
class Rule:
    """One rule: all given conditions must hold. ``then`` is a tier name or a score."""

    then: str | float
    pattern: str | None = None
    min_chars: int | None = None
    max_chars: int | None = None
    metadata: Mapping[str, Any] | None = None

    def matches(self, request: Request) -> bool:
        text = request.last_user_text
        if self.min_chars is not None and len(text) < self.min_chars:
            return False
        if self.max_chars is not None and len(text) > self.max_chars:
            return False
        if self.pattern is not None and not re.search(
            self.pattern, text, re.IGNORECASE | re.MULTILINE
        ):
            return False
        if self.metadata:
            for k, v in self.metadata.items():
                if request.metadata.get(k) != v:
                    return False
        return True

    def describe(self) -> str:
        parts = []
        if self.pattern is not None:
            parts.append(f"pattern {self.pattern!r}")
        if self.min_chars is not None:
            parts.append(f">= {self.min_chars} chars")
        if self.max_chars is not None:
            parts.append(f"<= {self.max_chars} chars")
        if self.metadata:
            parts.append(f"metadata {dict(self.metadata)}")
        return " and ".join(parts) or "always"


class RulesClassifier:
    """``rules: [{pattern: '\\\\d', then: strong}, {max_chars: 80, then: 0.1}]``, plus
    ``metadata_key`` (default ``tier``): a request whose metadata names a tier goes there."""

    name = "rules"

    def __init__(
        self,
        rules: Sequence[Rule | Mapping[str, Any]] = (),
        *,
        default_score: float = 0.0,
        metadata_key: str | None = "tier",
    ) -> None:
        self.rules: list[Rule] = []
        for i, r in enumerate(rules):
            if isinstance(r, Rule):
                self.rules.append(r)
                continue
            try:
                rule = Rule(**dict(r))
            except TypeError as exc:
                raise ConfigError(
                    f"rules[{i}]: {exc}", hint="keys: then, pattern, min_chars, max_chars, metadata"
                ) from None
            if rule.pattern is not None:
                try:
                    re.compile(rule.pattern)
                except re.error as exc:
                    raise ConfigError(
                        f"rules[{i}]: bad pattern {rule.pattern!r}: {exc}", hint="a Python regex"
                    ) from None
            self.rules.append(rule)
        self.default_score = default_score
        self.metadata_key = metadata_key

    async def classify(self, request: Request, call: CallNext | None = None) -> Verdict:
        return self.classify_sync(request)

    def classify_sync(self, request: Request) -> Verdict:
        if self.metadata_key and request.metadata.get(self.metadata_key):
            tier = str(request.metadata[self.metadata_key])
            return Verdict(1.0, f"metadata {self.metadata_key}={tier}", tier=tier)
        for rule in self.rules:
            if rule.matches(request):
                if isinstance(rule.then, str):
                    return Verdict(1.0, f"rule: {rule.describe()} -> {rule.then}", tier=rule.then)
                return Verdict(float(rule.then), f"rule: {rule.describe()} -> score {rule.then}")
        return Verdict(self.default_score, "no rule matched")
