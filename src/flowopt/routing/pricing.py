"""Prices and cost accounting for tiers.

Why every response carries its cost, and the cost of the strongest tier next to it: a
router that hides what it saved (or lost) cannot be tuned or trusted. A :class:`Price` is
per 1K input/output tokens (hosted models, or your own amortised GPU cost per token), or
per GPU-second of latency (self-hosted, when the GPU is the cost). The "always strongest"
figure prices the same request on the strongest tier; when the strongest tier did not run,
its output length is assumed equal to the answer actually given (an estimate, and labelled
so in the decision record).

Self-hosted tiers are priced per token from what the machine costs and how fast it serves
(:meth:`Price.from_throughput`), not per second of latency: tokens transfer between tiers
(the always-strongest estimate reprices the cheap tier's token counts) and do not depend on
how busy the machine was, while one request's latency is neither its share of a batched
server nor the latency the strong tier would have had. See docs/serving.md, "Pricing local
tiers".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, with_config

from flowopt.errors import ConfigError
from flowopt.middleware.options import MiddlewareOptions, config_error
from flowopt.types import Usage

__all__ = ["Price", "Tier", "TierOptions", "Tiers", "parse_tiers"]


@with_config(ConfigDict(extra="forbid", use_attribute_docstrings=True))
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
    def from_throughput(
        cls,
        machine_per_hour: float,
        output_tokens_per_s: float,
        input_tokens_per_s: float | None = None,
        *,
        input_ratio: float = 0.25,
    ) -> Price:
        """Per-token prices of a self-hosted model: the machine's cost per second divided
        by the tokens per second it serves, so a call costs the machine time it used.

        ``output_tokens_per_s`` is the aggregate decode throughput *at the concurrency you
        serve* (continuous batching shares the machine between requests, so a busy server's
        tokens are cheaper than a single stream's). ``input_tokens_per_s`` is the prefill
        throughput (prompt tokens per second); without it, a prompt token costs
        ``input_ratio`` of an output token (0.25: the usual ratio of hosted prices).
        Prefix-cache hits are left at the input price.

        >>> p = Price.from_throughput(0.36, 100.0)  # $0.36/h = $0.0001/s at 100 tok/s
        >>> round(p.output_per_1k, 6), round(p.input_per_1k, 6)
        (0.001, 0.00025)
        """
        if machine_per_hour < 0 or output_tokens_per_s <= 0:
            raise ConfigError(
                f"from_throughput: need machine_per_hour >= 0 and tokens/s > 0, got "
                f"{machine_per_hour} and {output_tokens_per_s}"
            )
        per_s = machine_per_hour / 3600.0
        output = per_s / output_tokens_per_s * 1000.0
        if input_tokens_per_s is None:
            inp = output * input_ratio
        elif input_tokens_per_s > 0:
            inp = per_s / input_tokens_per_s * 1000.0
        else:
            raise ConfigError(
                f"from_throughput: input tokens/s must be > 0, got {input_tokens_per_s}"
            )
        return cls(input_per_1k=inp, output_per_1k=output)

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


class TierOptions(MiddlewareOptions):
    """One tier of ``triage`` / ``cascade`` (tiers are listed cheapest first)."""

    name: str
    """Tier name, as decisions, rules and ``stream_tier`` name it."""
    backend: str | None = None
    """The pipeline backend that serves it (default: the tier's name)."""
    price: Price = Price()
    """What one call costs: ``{input_per_1k, output_per_1k, per_gpu_second,
    cached_input_per_1k}``."""

    def to_tier(self) -> Tier:
        return Tier(self.name, self.backend or self.name, self.price)


def _tier_items(value: Any) -> Any:
    """The short forms of a tier list: ``{name: {backend, price}}`` and bare names; a
    :class:`Tier` from Python is taken as is."""
    if isinstance(value, Mapping):
        return [
            {"name": str(k), **v}
            if isinstance(v, Mapping)
            else {"name": str(k)}
            if v is None
            else v
            for k, v in value.items()
        ]
    if isinstance(value, list | tuple):
        return [
            {"name": t}
            if isinstance(t, str)
            else {"name": t.name, "backend": t.backend, "price": t.price}
            if isinstance(t, Tier)
            else t
            for t in value
        ]
    return value


Tiers = Annotated[
    tuple[TierOptions, ...],
    BeforeValidator(
        _tier_items,
        json_schema_input_type=list[TierOptions | str] | dict[str, dict[str, Any] | None],
    ),
    Field(min_length=2),
]
"""Two or more tiers, cheapest first: ``[{name, backend, price}]``, ``[name, ...]`` or
``{name: {backend, price}}``."""


class _TierList(MiddlewareOptions):
    tiers: Tiers


def parse_tiers(value: Any) -> list[Tier]:
    """Accept ``[{name, backend, price}, ...]`` (cheapest first) or ``{name: {backend,
    price}}``. ``backend`` defaults to the tier's name. Raises ConfigError."""
    try:
        checked = _TierList.model_validate({"tiers": value})
    except ValidationError as exc:
        raise config_error(exc, "routing tiers") from None
    return [t.to_tier() for t in checked.tiers]
