"""Load shapes: who sends how many requests when.

- :func:`run_users`: U users, each sending R requests back to back (closed loop), i.e. a
  fixed concurrency of U until U x R requests are done;
- :func:`run_concurrency_sweep`: one closed-loop level per concurrency value;
- :func:`run_rate_sweep`: one open-loop level per arrival rate, Poisson arrivals (the
  gaps are exponential), so requests keep arriving when the target slows down — the only
  shape that shows queueing collapse, which a closed loop hides by slowing itself down;
- :func:`run_soak`: a fixed concurrency for a fixed duration, to catch drift (leaks,
  cache growth, thermal throttling) that short levels cannot.

While a level runs, a monitor task measures the client's own event-loop lag and CPU
share: if the client process is the bottleneck, the report says so instead of blaming
the target.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from flowopt.bench.stats import SLO, LevelStats, percentile, summarize
from flowopt.bench.targets import Sample, Target
from flowopt.bench.workload import Workload

__all__ = [
    "Progress",
    "run_concurrency_sweep",
    "run_rate_sweep",
    "run_soak",
    "run_users",
]


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal, unless forced)."""

    def __init__(self, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self._out: TextIO = stream or sys.stderr
        self.enabled = self._out.isatty() if enabled is None else enabled
        self._label = ""
        self._total: int | None = None
        self._done = 0
        self._errors = 0
        self._t0 = time.perf_counter()
        self._last = 0.0

    def start(self, label: str, total: int | None) -> None:
        self._label, self._total, self._done, self._errors = label, total, 0, 0
        self._t0 = time.perf_counter()
        self._draw(force=True)

    def tick(self, ok: bool) -> None:
        self._done += 1
        self._errors += 0 if ok else 1
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.1 and self._done != self._total:
            return
        self._last = now
        el = now - self._t0
        if self._total:
            frac = self._done / self._total
            bar = "#" * int(frac * 30)
            line = f"{self._label:<18} [{bar:<30}] {self._done}/{self._total}"
        else:
            line = f"{self._label:<18} {self._done} done"
        line += f"  err {self._errors}  {el:5.1f}s  {self._done / max(el, 1e-9):6.2f} req/s"
        self._out.write("\r" + line[:120].ljust(100))
        self._out.flush()

    def finish(self) -> None:
        if self.enabled:
            self._draw(force=True)
            self._out.write("\n")


@dataclass(slots=True)
class _Monitor:
    """Event-loop lag (how late a 10 ms timer fires) and process CPU share of a level."""

    lags: list[float]
    cpu0: float = 0.0
    wall0: float = 0.0

    @classmethod
    def start(cls) -> tuple[_Monitor, asyncio.Task[None]]:
        m = cls([], time.process_time(), time.perf_counter())

        async def run() -> None:
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.01)
                m.lags.append(max(0.0, time.perf_counter() - t - 0.01))

        return m, asyncio.ensure_future(run())

    def apply(self, stats: LevelStats) -> LevelStats:
        wall = time.perf_counter() - self.wall0
        stats.client_cpu_share = round((time.process_time() - self.cpu0) / max(wall, 1e-9), 4)
        stats.loop_lag_ms = {
            f"p{q}": None if (v := percentile(self.lags, q)) is None else round(v * 1000, 3)
            for q in (50, 99)
        }
        return stats


async def _closed_loop(
    target: Target,
    workload: Workload,
    *,
    concurrency: int,
    total: int,
    duration: float | None,
    progress: Progress,
) -> tuple[list[Sample], float]:
    samples: list[Sample] = []
    counter = iter(range(total)) if duration is None else None
    t0 = time.perf_counter()
    deadline = None if duration is None else t0 + duration

    async def user() -> None:
        while True:
            if counter is not None and next(counter, None) is None:
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            s = await target.send(workload.sample(), t0=t0)
            samples.append(s)
            progress.tick(s.ok)

    await asyncio.gather(*(user() for _ in range(concurrency)))
    return samples, time.perf_counter() - t0


_Run = Callable[[], Awaitable[tuple[list[Sample], float]]]


async def _level(
    label: str, load: float, kind: str, slo: SLO, progress: Progress, total: int | None, run: _Run
) -> LevelStats:
    progress.start(label, total)
    monitor, task = _Monitor.start()
    try:
        samples, wall = await run()
    finally:
        task.cancel()
    progress.finish()
    return monitor.apply(summarize(label, load, kind, samples, wall, slo))


async def run_users(
    target: Target, workload: Workload, *, users: int, requests: int, slo: SLO, progress: Progress
) -> LevelStats:
    """U users x R requests each (closed loop at concurrency U)."""
    return await _level(
        f"users={users}",
        users,
        "concurrency",
        slo,
        progress,
        users * requests,
        functools.partial(
            _closed_loop,
            target,
            workload,
            concurrency=users,
            total=users * requests,
            duration=None,
            progress=progress,
        ),
    )


async def run_concurrency_sweep(
    target: Target,
    workload: Workload,
    *,
    levels: Sequence[int],
    requests_per_user: int,
    slo: SLO,
    progress: Progress,
) -> list[LevelStats]:
    out = []
    for c in levels:
        out.append(
            await _level(
                f"concurrency={c}",
                c,
                "concurrency",
                slo,
                progress,
                c * requests_per_user,
                functools.partial(
                    _closed_loop,
                    target,
                    workload,
                    concurrency=c,
                    total=c * requests_per_user,
                    duration=None,
                    progress=progress,
                ),
            )
        )
    return out


async def _open_loop(
    target: Target,
    workload: Workload,
    *,
    rate: float,
    total: int,
    seed: int,
    progress: Progress,
    max_inflight: int,
) -> tuple[list[Sample], float]:
    rng = random.Random(seed)
    samples: list[Sample] = []
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(max_inflight)
    tasks = []

    async def one() -> None:
        try:
            s = await target.send(workload.sample(), t0=t0)
        finally:
            gate.release()
        samples.append(s)
        progress.tick(s.ok)

    due = t0
    for _ in range(total):
        due += rng.expovariate(rate)
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # the arrival schedule itself, not a sync stand-in
        await gate.acquire()
        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks)
    return samples, time.perf_counter() - t0


async def run_rate_sweep(
    target: Target,
    workload: Workload,
    *,
    rates: Sequence[float],
    duration: float,
    slo: SLO,
    progress: Progress,
    seed: int = 0,
    max_inflight: int = 1024,
) -> list[LevelStats]:
    """Open loop: Poisson arrivals at each rate for about ``duration`` seconds."""
    out = []
    for i, rate in enumerate(rates):
        total = max(1, round(rate * duration))
        out.append(
            await _level(
                f"rate={rate:g}/s",
                rate,
                "rate",
                slo,
                progress,
                total,
                functools.partial(
                    _open_loop,
                    target,
                    workload,
                    rate=rate,
                    total=total,
                    seed=seed + i,
                    progress=progress,
                    max_inflight=max_inflight,
                ),
            )
        )
    return out


async def run_soak(
    target: Target,
    workload: Workload,
    *,
    concurrency: int,
    duration: float,
    slo: SLO,
    progress: Progress,
    window: float | None = None,
) -> tuple[LevelStats, list[LevelStats]]:
    """Fixed concurrency for ``duration`` s; also per-window stats to show drift."""
    holder: list[Sample] = []

    async def run() -> tuple[list[Sample], float]:
        samples, wall = await _closed_loop(
            target, workload, concurrency=concurrency, total=0, duration=duration, progress=progress
        )
        holder.extend(samples)
        return samples, wall

    overall = await _level(
        f"soak c={concurrency}", concurrency, "concurrency", slo, progress, None, run
    )
    win = window or max(duration / 6, 1.0)
    windows = []
    n = max(1, math.ceil(duration / win))
    for k in range(n):
        lo, hi = k * win, (k + 1) * win
        part = [s for s in holder if lo <= s.start < hi]
        windows.append(summarize(f"t={lo:.0f}-{hi:.0f}s", hi, "time", part, win, slo))
    return overall, windows
