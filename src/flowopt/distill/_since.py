"""``--since``: an ISO date or time (UTC unless it says otherwise), or an age such as ``7d``.

Why both: a scheduled export says "the last 24h"; a one-off one names the day a model or a
prompt template changed, after which older answers are no longer what the student should
learn.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from flowopt.distill.errors import DistillError

__all__ = ["parse_since"]

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_since(value: str, *, now: float | None = None) -> float:
    """The Unix time ``value`` names: ``2026-12-01``, ``2026-12-01T08:30:00+01:00``
    (a time without an offset is UTC), or an age back from now (``90m``, ``24h``, ``7d``,
    ``2w``)."""
    text = value.strip()
    age = _AGE.match(text.lower())
    if age is not None:
        return (now if now is not None else time.time()) - float(age.group(1)) * _UNIT[age.group(2)]
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DistillError(
            f"--since {value[:40]!r} is neither a date nor an age",
            hint="use a date (2026-12-01), a UTC time (2026-12-01T08:30:00Z) or an age "
            "back from now (24h, 7d, 2w)",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    stamp = when.timestamp()
    if stamp > (now if now is not None else time.time()):
        raise DistillError(
            f"--since {value[:40]!r} is in the future: nothing can have been answered since",
            hint="give a past date, or an age such as 7d",
        )
    return stamp
