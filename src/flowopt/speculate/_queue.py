"""The backend's own queue, read off the request path, for the speculation gate.

Why: a speculative request is extra load, and when the engine already has requests
waiting (vLLM's ``vllm:num_requests_waiting``) a guess would queue in front of, or
beside, somebody's real request. The load shedder sees only this process's requests;
the engine's queue sees every client's.

Why off the request path: reading ``/metrics`` takes a round trip, and the gate must
never make a run wait for it. :meth:`QueueProbe.waiting` answers at once from the last
reading and, when that is older than ``interval`` and no read is in flight, starts one
in the background. A reading older than ``fresh_for``, a failed read, or none yet is
``None`` ("unknown"): the gate then does not block speculation on the queue, and
counts the decision (``EdgeStats.queue_unknown``, ``failures`` here).
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
    """Cached, background-refreshed reading of a backend's waiting requests."""

    def __init__(
        self,
        read: Callable[[], Awaitable[int]],
        *,
        interval: float = 1.0,
        fresh_for: float = 5.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self.interval = interval
        self.fresh_for = fresh_for
        self.timeout = timeout
        self._clock = clock
        self._value: int | None = None
        self._at = -math.inf  # when _value was read
        self._asked = -math.inf  # when the last read started
        self._task: asyncio.Task[None] | None = None
        self.polls = 0
        self.failures = 0

    def waiting(self) -> int | None:
        """Requests waiting on the backend per the last fresh reading, else ``None``.
        Never waits; may start a background read. Call it from the event loop."""
        now = self._clock()
        loop = asyncio.get_running_loop()
        # a read left pending by a loop that has since closed (sync ``invoke``) never ends
        idle = self._task is None or self._task.done() or self._task.get_loop() is not loop
        if idle and now - self._asked >= self.interval:
            self._asked = now
            self._task = loop.create_task(self._poll())
        if now - self._at > self.fresh_for:
            return None
        return self._value

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
        if self._task is not None and self._task.get_loop() is asyncio.get_running_loop():
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            self._task.cancel()
        await self.settled()
