"""The fuzz suite's budget, seed and record of what it tried.

Two modes, chosen by the environment:

- in ``make test`` (nothing set): a fixed, small budget (``CI_EXAMPLES`` per property)
  with ``derandomize=True``, so every run tries the same inputs and a failure reproduces;
- in ``make fuzz`` (``FLOWOPT_FUZZ_EXAMPLES`` set, and ``FLOWOPT_FUZZ_SEED`` per round by
  scripts/fuzz.sh): that many examples per property from that seed, each input and its
  outcome appended as one JSON line to ``$FLOWOPT_FUZZ_LOG``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import hypothesis
from hypothesis import HealthCheck, settings

F = TypeVar("F", bound=Callable[..., Any])

CI_EXAMPLES = 150


def fuzz_settings() -> settings:
    examples = os.environ.get("FLOWOPT_FUZZ_EXAMPLES")
    common: dict[str, Any] = {
        "deadline": None,  # a shared CI box is no place for timings; limits are tested apart
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
        "database": None,
    }
    if examples:
        return settings(max_examples=int(examples), derandomize=False, **common)
    return settings(max_examples=CI_EXAMPLES, derandomize=True, **common)


def budget(test: F) -> F:
    """Apply this mode's settings (and the round's seed, in ``make fuzz``) to a
    ``@given`` test."""
    test = fuzz_settings()(test)
    raw = os.environ.get("FLOWOPT_FUZZ_SEED")
    if raw:
        test = hypothesis.seed(int(raw))(test)
    return test


def record(target: str, tried: Any, outcome: str) -> None:
    """Append one tried input to the fuzz log (long runs only)."""
    path = os.environ.get("FLOWOPT_FUZZ_LOG")
    if not path:
        return
    text = tried.decode("utf-8", "backslashreplace") if isinstance(tried, bytes) else tried
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"target": target, "outcome": outcome, "input": text}) + "\n")
