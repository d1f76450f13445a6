"""Serving profiles: the engine-side levers, one name each (``flowopt backend up --profile``).

A profile is a named set of vLLM flags, measured in docs/serving.md, so a capacity planner
turns one lever on or off without learning the engine's flag names:

- ``default``: vLLM's defaults, which already include **prefix caching** (a prompt that
  shares a prefix with an earlier one skips that part of the prefill).
- ``no-prefix-cache``: prefix caching off: the baseline that shows what it is worth.
- ``ngram``: **n-gram speculative decoding** (prompt lookup, no draft model): the engine
  guesses the next tokens from n-grams already in the prompt and verifies them in one step.
  Greedy output is identical with and without it (tested); it pays on extractive answers
  (copying from the prompt), costs on free text and at high concurrency.

Every profile also asks the server for ``prompt_tokens_details`` so responses (and the
backend span, ``gen_ai.usage.cache_read.input_tokens``) report prefix-cache hits.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from flowopt.errors import ConfigError

__all__ = ["PROFILES", "Profile", "get_profile"]

NGRAM_CONFIG = {
    "method": "ngram",
    "num_speculative_tokens": 4,
    "prompt_lookup_max": 4,
    "prompt_lookup_min": 2,
}
"""Measured on these CPUs (docs/serving.md, ``benchmarks/engine_levers.py``): 1.76x decode
speed single-stream on extractive text, 0.83x on free text, 0.72-0.96x at 16 concurrent
streams; more speculative tokens accept less and cost more per step."""

_DETAILS = ("--enable-prompt-tokens-details",)


@dataclass(frozen=True, slots=True)
class Profile:
    """A named set of engine flags and what they are for."""

    name: str
    description: str
    vllm_args: tuple[str, ...] = ()

    def args(self) -> tuple[str, ...]:
        """The vLLM flags of this profile (cached-token reporting included)."""
        return (*_DETAILS, *self.vllm_args)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("default", "vLLM's defaults: prefix caching on, no speculation"),
        Profile(
            "no-prefix-cache",
            "prefix caching off (the baseline for measuring it)",
            ("--no-enable-prefix-caching",),
        ),
        Profile(
            "ngram",
            "n-gram speculative decoding (prompt lookup, no draft model) + prefix caching",
            ("--speculative-config", json.dumps(NGRAM_CONFIG, separators=(",", ":"))),
        ),
    )
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; a ConfigError with close names otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(PROFILES), n=3, cutoff=0.5)
        raise ConfigError(
            f"unknown serving profile {name!r}",
            hint=(f"did you mean {', '.join(repr(c) for c in close)}? " if close else "")
            + f"profiles: {', '.join(PROFILES)}",
        ) from None
