"""The sync facade's event loop: one background thread per process.

Why not ``asyncio.run`` per call: connection pools (httpx) and stores are bound to the loop
that created them; a fresh loop per ``invoke`` would rebuild them every call and break
them across calls. One long-lived loop in a daemon thread keeps one code path (the async
core) and lets sync callers share pools. The caller's OpenTelemetry context is copied
into the coroutine so sync calls still nest under the caller's span.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["iterate", "run"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="flowopt-loop", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the background loop, in a copy of the caller's context, and wait."""
    if _in_loop_thread():
        coro.close()
        raise RuntimeError(
            "a flowopt sync method was called from inside flowopt's own event loop; "
            "use the async method (ainvoke/astream/abatch) there"
        )
    loop = _get_loop()
    ctx = contextvars.copy_context()
    done = threading.Event()
    box: list[asyncio.Task[T]] = []

    def _schedule() -> None:
        task = loop.create_task(coro, context=ctx)
        box.append(task)
        task.add_done_callback(lambda _t: done.set())

    loop.call_soon_threadsafe(_schedule)
    done.wait()
    return box[0].result()


def _in_loop_thread() -> bool:
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def iterate(agen: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator from sync code, one item at a time."""
    it = agen.__aiter__()

    async def _next() -> tuple[bool, T | None]:
        try:
            return True, await it.__anext__()
        except StopAsyncIteration:
            return False, None

    try:
        while True:
            ok, item = run(_next())
            if not ok:
                return
            yield item  # type: ignore[misc]
    finally:
        close = getattr(it, "aclose", None)
        if close is not None:
            run(close())
