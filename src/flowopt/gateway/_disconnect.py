"""Cancel work when the HTTP client goes away.

Why this exists: uvicorn (ASGI spec 2.3) silently drops ``send`` calls after a client has
disconnected, so a handler that only sends would keep a vLLM generation running to
``max_tokens`` for nobody. The only signal is an ``http.disconnect`` message from
``receive``, so every answer here races its work against that message:

- :func:`until_disconnect` runs a coroutine (a non-streamed call, or the call that opens a
  stream) and cancels it if the client leaves first;
- :class:`EventStreamResponse` streams server-sent events and, when the client leaves,
  cancels the pump and closes the event generator, whose ``finally`` abandons the backend
  stream (``Stream.aclose`` closes the HTTP connection to vLLM, which aborts the request).

The generation routes use one :class:`DisconnectWatch` per request instead: a single
watcher task for the whole answer, the backend call awaited in the request's own task
(the request span is current there), then the stream's pump in that same task with the
request span made current again, so the OTel span that is current when the answer starts
stays the parent of everything the work does. :func:`until_disconnect` (work in a child task, whose
``create_task`` copies the context) remains for the embeddings route.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    MutableMapping,
    Sequence,
)
from contextlib import AbstractContextManager
from typing import Any, TypeVar

__all__ = ["ClientLeft", "DisconnectWatch", "EventStreamResponse", "until_disconnect"]

T = TypeVar("T")
_DONE = b"data: [DONE]\n\n"  # an SSE stream's last event (OpenAI's terminator)
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ClientLeft(Exception):
    """The client disconnected before the answer was ready; the work was cancelled."""


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(BaseException):
            await t


async def until_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``; cancel it and raise :class:`ClientLeft` if the client leaves first."""
    job = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait((job, watch), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        await _cancel(job, watch)
        raise
    if job.done():
        watch.cancel()
        return job.result()
    await _cancel(job)
    raise ClientLeft()


class DisconnectWatch:
    """One request's watch for its client leaving, from the body's end to the answer's.

    One task reads ``receive`` for the whole answer (opening the backend call, then the
    stream) and, when ``http.disconnect`` arrives, cancels the work being watched at that
    moment. :meth:`run` awaits its work in the caller's own task, so a generation request
    costs one extra task (this one) instead of a worker and a watcher per phase joined by
    ``asyncio.wait``. Call :meth:`close` when the answer is done.
    """

    __slots__ = ("_fired", "_pending", "_receive", "_target", "_task", "left")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[None] | None = None
        self._target: asyncio.Task[Any] | None = None
        self._fired: asyncio.Task[Any] | None = None  # the task our cancel was sent to
        self._pending = False  # a _cancel_target callback is scheduled
        self.left = False

    async def _watch(self) -> None:
        # A failing receive counts as the client gone, as it did for until_disconnect.
        with contextlib.suppress(Exception):
            await _wait_disconnect(self._receive)
        self.left = True
        self._schedule_cancel()

    def _schedule_cancel(self) -> None:
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self._cancel_target)

    def _cancel_target(self) -> None:
        # Whatever is watched when this runs (a loop turn after the disconnect was read):
        # the request's task inside :meth:`run` or :meth:`guard`. Once per task: the
        # request task is watched twice (opening the call, then the stream), and a second
        # cancel would make the first look like someone else's.
        self._pending = False
        target = self._target
        if target is not None and self._fired is not target:
            self._fired = target
            target.cancel()

    def _start(self, target: asyncio.Task[Any]) -> None:
        self._target = target
        if self._task is None:
            self._task = asyncio.ensure_future(self._watch())

    async def _watched(self, task: asyncio.Task[Any], work: Coroutine[Any, Any, T]) -> T:
        self._start(task)
        try:
            return await work
        except asyncio.CancelledError:
            # Ours only if our cancel reached this task and nobody else's (a server
            # shutdown) is pending too: then the request ends with ClientLeft. Any other
            # cancellation goes on, even when the client also left in the same turn.
            if self._fired is task:
                self._fired = None
                if task.uncancel() == 0:
                    raise ClientLeft() from None
            raise
        finally:
            self._target = None

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Await ``work`` in this task; cancel it and raise :class:`ClientLeft` if the
        client leaves first."""
        if self.left:
            work.close()
            raise ClientLeft()
        task = asyncio.current_task()
        assert task is not None
        return await self._watched(task, work)

    async def guard(self, pump: Coroutine[Any, Any, T]) -> T:
        """Await ``pump`` (the stream's) in this task, as :meth:`run` does, but always
        let it start: cancelled before its first step, its event generator would never
        start, so its ``finally`` (closing the backend stream) would never run either.
        A client that had already left cancels it at its first suspension.

        Why in this task and not a task of its own: a task per streamed answer costs its
        creation, a context copy and a loop turn before the first event goes out.
        """
        task = asyncio.current_task()
        assert task is not None
        if self.left:  # the callback runs once the pump has started and suspended
            self._schedule_cancel()
        return await self._watched(task, pump)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


class EventStreamResponse:
    """An ASGI ``text/event-stream`` answer fed by an async generator of encoded events.

    ``on_disconnect`` is called when the client left before the last event, ``on_error``
    when anything else but a cancellation ended the answer early (``send`` or closing the
    events failed: the event generators turn their own failures into error events), so
    the request's book-keeping is finished either way. ``scope`` is
    entered around the events' production (in the ASGI server's task, which calls this
    response after the endpoint returned): pass one that makes the request's span current
    again, so what the events do is its child.
    """

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        *,
        headers: Sequence[tuple[str, str]] = (),
        on_disconnect: Callable[[], None] | None = None,
        on_error: Callable[[Exception], object] | None = None,
        scope: Callable[[], AbstractContextManager[Any]] | None = None,
        watch: DisconnectWatch | None = None,
    ) -> None:
        self._events = events
        self._watch = watch
        self._scope = scope
        self._on_disconnect = on_disconnect
        self._on_error = on_error
        self._headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers),
        ]

    async def _pump(self, send: Send) -> None:
        with self._scope() if self._scope is not None else contextlib.nullcontext():
            await self._relay(send)

    async def _relay(self, send: Send) -> None:
        events = self._events
        try:
            data: bytes | None = await anext(events, None)
            while data is not None:
                following: bytes | None = None
                if data.endswith(_DONE):
                    # The stream's last event: what follows it comes without I/O (the
                    # generator's book-keeping), so look ahead and, at the end, send the
                    # event as the body's last piece: a write less per answer.
                    following = await anext(events, None)
                    if following is None:
                        await send({"type": "http.response.body", "body": data, "more_body": False})
                        return
                await send({"type": "http.response.body", "body": data, "more_body": True})
                data = following if following is not None else await anext(events, None)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await events.aclose()

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        watch = self._watch or DisconnectWatch(receive)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
            await watch.guard(self._pump(send))  # re-raises a pump failure
        except ClientLeft:
            if self._on_disconnect is not None:
                self._on_disconnect()
        except Exception as exc:
            if self._on_error is not None:
                self._on_error(exc)
            raise
        finally:
            watch.close()
