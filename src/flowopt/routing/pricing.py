"""Prices and cost accounting for tiers.

Why every response carries its cost, and the cost of the strongest tier next to it: a
router that hides what it saved (or lost) cannot be tuned or trusted. A :class:`Price` is
per 1K input/output tokens (hosted models, or your own amortised GPU cost per token), or
per GPU-second of latency (self-hosted, when the GPU is the cost). The "always strongest"
figure prices the same request on the strongest tier; when the strongest tier did not run,
its output length is assumed equal to the answer actually given (an estimate, and labelled
so in the decision record).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowopt.errors import ConfigError
from flowopt.types import Usage

__all__ = ["Price", "Tier", "parse_tiers"]


@dataclass(frozen=True, slots=True)
class Price:
    """Cost of one call. All fields default to 0; combine freely."""

    input_per_1k: float = 0.0
    """Currency units per 1,000 prompt tokens."""
    output_per_1k: float = 0.0
    """Currency units per 1,000 generated tokens."""
    per_gpu_second: float = 0.0
    """Currency units per second of the call's latency (self-hosted GPU time)."""
    cached_input_per_1k: float | None = None
    """Price of prompt tokens served from the prefix cache (default: the input price)."""

    def cost(self, usage: Usage, latency_ms: float | None = None) -> float:
        cached = usage.cached_input_tokens
        cached_price = (
            self.input_per_1k if self.cached_input_per_1k is None else self.cached_input_per_1k
        )
        c = (usage.input_tokens - cached) * self.input_per_1k / 1000.0
        c += cached * cached_price / 1000.0
        c += usage.output_tokens * self.output_per_1k / 1000.0
        if self.per_gpu_second and latency_ms is not None:
            c += self.per_gpu_second * latency_ms / 1000.0
        return c

    @classmethod
    def parse(cls, value: Any, where: str) -> Price:
        if value is None:
            return cls()
        if isinstance(value, Price):
            return value
        if isinstance(value, Mapping):
            try:
                return cls(**dict(value))
            except TypeError as exc:
                raise ConfigError(
                    f"{where}: bad price {dict(value)}: {exc}",
                    hint="price: {input_per_1k: 0.0002, output_per_1k: 0.0006} "
                    "or {per_gpu_second: 0.001}",
                ) from None
        raise ConfigError(
            f"{where}: a price is a mapping, got {value!r}", hint="see docs/triage.md"
        )


@dataclass(frozen=True, slots=True)
class Tier:
    """One model tier: a name, the pipeline backend that serves it, and its price."""

    name: str
    backend: str
    price: Price = Price()


def parse_tiers(value: Any) -> list[Tier]:
    """Accept ``[{name, backend, price}, ...]`` (cheapest first) or ``{name: {backend,
    price}}``. ``backend`` defaults to the tier's name."""
    items: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(value, Mapping):
        items = [(str(k), v or {}) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        for i, t in enumerate(value):
            if isinstance(t, Tier):
                items.append((t.name, {"backend": t.backend, "price": t.price}))
            elif isinstance(t, str):
                items.append((t, {}))
            elif isinstance(t, Mapping) and "name" in t:
                items.append((str(t["name"]), t))
            else:
                raise ConfigError(
                    f"tiers[{i}]: cannot read {t!r}", hint="{name: cheap, backend: default}"
                )
    else:
        raise ConfigError(f"tiers must be a list, got {value!r}", hint="see docs/triage.md")
    if len(items) < 2:
        raise ConfigError(
            f"routing needs at least two tiers, got {len(items)}",
            hint="tiers: [{name: small, backend: default}, {name: large, backend: strong}]",
        )
    tiers = []
    for name, opts in items:
        extra = set(opts) - {"name", "backend", "price"}
        if extra:
            raise ConfigError(
                f"tier {name!r}: unknown keys {sorted(extra)}", hint="name, backend, price"
            )
        tiers.append(
            Tier(
                name,
                str(opts.get("backend", name)),
                Price.parse(opts.get("price"), f"tier {name!r}"),
            )
        )
    return tiers
