"""The backend's own queue, read off the request path, for the speculation gate.

Why: a speculative request is extra load, and when the engine already has requests
waiting (vLLM's ``vllm:num_requests_waiting``) a guess would queue in front of, or
beside, somebody's real request. The load shedder sees only this process's requests;
the engine's queue sees every client's.

Why off the request path, and why a poller: reading ``/metrics`` takes a round trip, and
the gate must never make a run wait for it; but a reading taken only when a decision
arrives is as old as the gap between decisions (seconds to minutes), so most decisions
would see a stale queue. :class:`QueueProbe` therefore polls in the background while the
edge is in use: the first :meth:`QueueProbe.waiting` starts a poller that reads the
queue at most once per ``interval`` and stops by itself once no decision has asked for
``idle_after`` seconds (30 by default: long enough to span the gaps of a steady trickle
of runs, about 30 small reads of ``/metrics`` after the last one; an idle edge then
costs the engine nothing). ``waiting`` always answers at once from the last reading. A
reading older than ``fresh_for``, a failed read, or none yet is ``None`` ("unknown"):
the gate then does not block speculation on the queue, and counts the decision
(``EdgeStats.queue_unknown``, ``failures`` here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable

__all__ = ["QueueProbe"]

_log = logging.getLogger("flowopt.speculate")


class QueueProbe:
    """Background-polled reading of a backend's waiting requests.

    ``clock`` and ``pause`` (how the poller waits between reads) are injectable so tests
    drive time themselves."""

    def __init__(
        self,
        read: Callable[[], Awaitable[int]],
        *,
        interval: float = 1.0,
        fresh_for: float = 5.0,
        timeout: float = 2.0,
        idle_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._read = read
        self.interval = interval
        self.fresh_for = fresh_for
        self.timeout = timeout
        self.idle_after = idle_after
        self._clock = clock
        self._pause = pause
        self._value: int | None = None
        self._at = -math.inf  # when _value was read
        self._asked = -math.inf  # when a decision last asked
        self._task: asyncio.Task[None] | None = None  # the poller
        self._reading: asyncio.Task[None] | None = None  # the read in flight
        self.polls = 0
        self.failures = 0

    @property
    def polling(self) -> bool:
        """Whether the background poller is running."""
        return self._task is not None and not self._task.done()

    def waiting(self) -> int | None:
        """Requests waiting on the backend per the last fresh reading, else ``None``.
        Never waits; starts the poller if it is not running. Call it from the loop."""
        now = self._clock()
        self._asked = now
        loop = asyncio.get_running_loop()
        # a poller left by a loop that has since closed (sync ``invoke``) never runs again
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run())
        if now - self._at > self.fresh_for:
            return None
        return self._value

    def _idle(self) -> bool:
        return self._clock() - self._asked > self.idle_after

    async def _run(self) -> None:
        """Read, wait out the rest of the interval, again, until nobody has asked for
        ``idle_after`` seconds."""
        while True:
            began = self._clock()
            self._reading = asyncio.get_running_loop().create_task(self._poll())
            await self._reading
            if self._idle():
                return
            await self._pause(max(0.0, self.interval - (self._clock() - began)))
            if self._idle():
                return

    async def _poll(self) -> None:
        self.polls += 1
        try:
            value = await asyncio.wait_for(self._read(), self.timeout)
        except Exception as exc:  # a failed read is "unknown", never a failed run
            self.failures += 1
            self._value = None
            _log.debug("backend queue read failed: %s", type(exc).__name__)
            return
        self._value = int(value)
        self._at = self._clock()

    async def settled(self) -> None:
        """Wait for the read in flight, if any (tests and shutdown)."""
        task = self._reading
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def aclose(self) -> None:
        """Stop the poller (and the read in flight)."""
        loop = asyncio.get_running_loop()
        for task in (self._task, self._reading):
            if task is not None and not task.done() and task.get_loop() is loop:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
