"""Single flight: concurrent identical cacheable misses reach the engine once.

Why: a popular question after a deploy, a retry storm or a batch of duplicates arrives as
N identical requests before the first answer is stored, and without this all N miss and
all N reach the engine. Like nginx's ``proxy_cache_lock`` or Go's ``singleflight``, the
first miss for an exact key becomes the *leader* and calls the engine; the others become
*followers* and wait for the leader's answer.

Rules (the cache middleware applies them):

- The flight key is the exact cache key, so a flight never crosses what a cache hit may
  not cross: tenant (and user with ``scope: user``), model, template, parameters, tools.
  Sampled requests and tool-result turns bypass the cache before a key exists, so they
  never coalesce.
- A follower gets exactly what a cache hit right after the leader's answer would give it:
  only an answer the cache would store (no tool calls, no personal data, not truncated);
  otherwise each follower calls the engine itself (:data:`ALONE`).
- A follower waits at most until its own deadline, then calls the engine itself.
- The leader's call runs in its own task, shielded: the leader's client leaving does not
  cancel it while followers wait (it is cancelled when nobody waits).
- The leader fails with an error: every follower raises **the same error** (one engine
  call, one outcome, as ``singleflight`` does; a retry is the client's choice). A leader
  whose *stream* was abandoned or cut leaves no answer: the followers elect a new leader
  among themselves (:data:`RETRY`), so they are still answered with one more call.

Per process: with ``--workers N`` each worker has its own flights (at most N engine calls
for one burst); a shared Redis exact tier then serves everyone once the answer is stored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Final

from flowopt.types import Response

__all__ = ["ALONE", "RETRY", "TIMEOUT", "Flight", "Flights", "Outcome"]

RETRY: Final = "retry"
"""The leader left no answer (its stream was abandoned or cut): elect a new leader."""
ALONE: Final = "alone"
"""The leader's answer may not be shared (it would not be stored): call the engine alone."""
TIMEOUT: Final = "timeout"
"""The follower's own deadline came first: call the engine alone."""

Outcome = tuple[Response, list[str] | None] | BaseException | str
"""``(final response, stream chunk texts or None)``, the leader's error, or a marker."""


@dataclass(slots=True, eq=False)
class Flight:
    """One engine call that several requests wait on."""

    done: asyncio.Future[Outcome]
    waiters: int = 0
    tasks: set[asyncio.Task[object]] = field(default_factory=set)


class Flights:
    """Flights in progress, by exact cache key (one event loop)."""

    __slots__ = ("_by_key", "coalesced")

    def __init__(self) -> None:
        self._by_key: dict[str, Flight] = {}
        self.coalesced = 0  # followers answered by a leader (a counter for tests/benchmarks)

    def join(self, key: str) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it (it started it)."""
        flight = self._by_key.get(key)
        if flight is not None and not flight.done.done():
            return flight, False
        flight = Flight(asyncio.get_running_loop().create_future())
        self._by_key[key] = flight
        return flight, True

    def land(self, key: str, flight: Flight, outcome: Outcome) -> None:
        """End ``flight`` with ``outcome`` (the first outcome wins) and forget it."""
        if self._by_key.get(key) is flight:
            del self._by_key[key]
        if not flight.done.done():
            flight.done.set_result(outcome)  # an error is a value: never "not retrieved"

    def waiting(self) -> int:
        """Followers waiting now, across all flights."""
        return sum(f.waiters for f in self._by_key.values())

    async def wait(self, flight: Flight, timeout: float | None) -> Outcome:
        """The leader's outcome, or :data:`TIMEOUT` after ``timeout`` seconds."""
        if timeout is not None and timeout <= 0:
            return TIMEOUT
        flight.waiters += 1
        try:
            return await asyncio.wait_for(asyncio.shield(flight.done), timeout)
        except TimeoutError:
            return TIMEOUT
        finally:
            flight.waiters -= 1
