"""Load shedding: bounded concurrency and a bounded priority queue per backend.

Why shed instead of queueing: past a server's saturation point every extra request in
flight makes *every* request slower (continuous batching shares the GPU), and an unbounded
queue turns overload into timeouts for everyone. This layer lets ``max_concurrency``
requests run per backend, holds at most ``max_queue`` more (highest ``priority`` first,
then arrival order), and past that rejects the lowest-priority request *at once* with
``Overloaded(reason="shed", retry_after=...)`` — a newcomer with a higher priority than
the lowest waiter evicts that waiter instead. The rejection is decided synchronously, with
no I/O, so it costs microseconds, not a timeout.

``retry_after`` is the expected time for one slot to free up: the recent mean service time
times the queue ahead divided by the concurrency. A waiter whose deadline cannot be met at
that estimate is refused up front too (``reason="shed:deadline"``).

Slots are held until a streamed answer finishes (or fails / is closed): a stream in flight
occupies the server as much as a buffered call. Per backend means per route name
(``Request.route``); requests with no route share the ``default`` pool.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import Field

from flowopt.errors import Overloaded
from flowopt.middleware.base import CallNext, MiddlewareBase
from flowopt.middleware.options import MiddlewareOptions, make_options
from flowopt.stream import when_final
from flowopt.types import Request, Response

__all__ = ["LoadShed", "LoadShedOptions"]


class LoadShedOptions(MiddlewareOptions):
    """Options of ``shed`` (short form: ``shed: 8`` sets ``max_concurrency``)."""

    max_concurrency: int = Field(8, ge=1)
    """Requests in flight per backend: set it at the backend's saturation point
    (``benchmarks/resilience.py`` measures it)."""
    max_queue: int = Field(8, ge=0)
    """Waiting requests per backend beyond that; 0 rejects at once."""
    ewma: float = Field(0.2, gt=0, le=1)
    """Weight of the newest service time in the retry-after estimate."""


@dataclass(order=True)
class _Waiter:
    sort_key: tuple[int, int]
    future: asyncio.Future[None] = field(compare=False)
    priority: int = field(compare=False)


@dataclass
class _Pool:
    active: int = 0
    queue: list[_Waiter] = field(default_factory=list)
    service_s: float = 0.0  # EWMA of slot hold time
    admitted: int = 0
    shed: int = 0


class LoadShed(MiddlewareBase):
    """Options: :class:`LoadShedOptions` (``max_concurrency``, ``max_queue``, ``ewma``)."""

    name: ClassVar[str] = "shed"
    positional: ClassVar[str | None] = "max_concurrency"
    options_model: ClassVar[type[LoadShedOptions]] = LoadShedOptions

    def __init__(self, options: LoadShedOptions | int | None = None, /, **kwargs: Any) -> None:
        self.options = opts = make_options(
            LoadShedOptions, options, kwargs, name=self.name, positional=self.positional
        )
        self.max_concurrency = opts.max_concurrency
        self.max_queue = opts.max_queue
        self.ewma = opts.ewma
        self.pools: dict[str, _Pool] = {}
        self._seq = itertools.count()

    def _pool(self, request: Request) -> tuple[str, _Pool]:
        key = request.route or "default"
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = _Pool()
        return key, pool

    def _retry_after(self, pool: _Pool, ahead: int) -> float:
        per_slot = pool.service_s or 0.5
        return round(per_slot * (ahead + 1) / self.max_concurrency, 3)

    def _reject(self, request: Request, key: str, pool: _Pool, why: str) -> Overloaded:
        pool.shed += 1
        return Overloaded(
            f"backend {key!r} is saturated ({pool.active} running, {len(pool.queue)} "
            f"waiting); request {request.request_id} (priority {request.priority}) shed",
            reason=why,
            retry_after=self._retry_after(pool, len(pool.queue)),
            request_id=request.request_id,
            hint="retry after retry_after seconds, raise the priority, or add capacity",
        )

    def _release(self, pool: _Pool, held_s: float) -> None:
        pool.service_s = (
            held_s
            if pool.service_s == 0
            else (self.ewma * held_s + (1 - self.ewma) * pool.service_s)
        )
        while pool.queue:
            waiter = heapq.heappop(pool.queue)
            if not waiter.future.done():
                waiter.future.set_result(None)  # the slot passes to it directly
                return
        pool.active -= 1

    async def _acquire(self, request: Request, key: str, pool: _Pool) -> None:
        if pool.active < self.max_concurrency and not pool.queue:
            pool.active += 1
            return
        left = request.remaining()
        if left is not None and left < self._retry_after(pool, len(pool.queue)):
            raise self._reject(request, key, pool, "shed:deadline")
        if len(pool.queue) >= self.max_queue:
            if not pool.queue:
                raise self._reject(request, key, pool, "shed")
            lowest = max(pool.queue)  # lowest priority, latest arrival
            if lowest.priority >= request.priority:
                raise self._reject(request, key, pool, "shed")
            pool.queue.remove(lowest)
            heapq.heapify(pool.queue)
            lowest.future.set_exception(self._reject(request, key, pool, "shed:evicted"))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(
            pool.queue, _Waiter((-request.priority, next(self._seq)), fut, request.priority)
        )
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release(pool, 0.0)  # we were handed a slot as we gave up: pass it on
            raise

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        key, pool = self._pool(request)
        queued_at = time.perf_counter()
        await self._acquire(request, key, pool)
        started = time.perf_counter()
        pool.admitted += 1
        try:
            response = await call_next(request)
        except BaseException:
            self._release(pool, time.perf_counter() - started)
            raise
        released = False

        def done(_: object) -> None:  # the slot is held until a stream ends, either way
            nonlocal released
            if not released:
                released = True
                self._release(pool, time.perf_counter() - started)

        response = await when_final(response, done, done)
        wait_ms = (started - queued_at) * 1000.0
        if wait_ms >= 1.0:
            response = response.with_decision(self.decision("queued", wait_ms=round(wait_ms, 1)))
        return response
