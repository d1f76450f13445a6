"""CPU pinning for a local engine: which cores a server may run on.

Why: two engines on one machine (a cheap and a strong tier, or the two steps of a
speculated edge) that share every core slow each other down; vLLM-CPU also binds its
OpenMP threads itself (``VLLM_CPU_OMP_THREADS_BIND``), so moving the process with
``taskset`` alone is not enough. ``flowopt backend up --cpus 0`` gives a server core 0
(its API server process and its engine's threads), ``--cpus 1`` the next one core 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from flowopt.errors import ConfigError

__all__ = ["affinity_setter", "parse_cpus", "pin_env"]


def parse_cpus(text: str) -> tuple[int, ...]:
    """``"0"``, ``"0-3"``, ``"0,2,4-5"`` -> the sorted core ids; each must be a core this
    process may run on.

    Raises:
        ConfigError: malformed, or a core this machine does not offer.
    """
    cores: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
            if first < 0 or last < first:
                raise ValueError(part)
            cores.update(range(first, last + 1))
    except ValueError:
        raise ConfigError(
            f"--cpus {text!r} is not a core list",
            hint="write cores as taskset does: 0, 0-3 or 0,2,4-5",
        ) from None
    usable = os.sched_getaffinity(0)
    missing = sorted(cores - usable)
    if missing:
        raise ConfigError(
            f"--cpus names cores {missing} that this process cannot run on",
            hint=f"usable cores: {','.join(str(c) for c in sorted(usable))}",
        )
    return tuple(sorted(cores))


def pin_env(cpus: tuple[int, ...]) -> dict[str, str]:
    """The environment that binds vLLM-CPU's OpenMP threads to ``cpus``."""
    return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in cpus)}


def affinity_setter(cpus: tuple[int, ...] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that moves the child (and so every process it starts) onto
    ``cpus``; None when nothing is pinned."""
    if not cpus:
        return None
    cores = set(cpus)

    def pin() -> None:
        os.sched_setaffinity(0, cores)

    return pin
