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

The work runs in a child task. ``create_task`` copies context variables, so the OTel span
that is current when the answer starts stays the parent of everything the work does.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    MutableMapping,
    Sequence,
)
from typing import Any, TypeVar

__all__ = ["ClientLeft", "EventStreamResponse", "until_disconnect"]

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


class EventStreamResponse:
    """An ASGI ``text/event-stream`` answer fed by an async generator of encoded events.

    ``on_disconnect`` is called when the client left before the last event. ``context``
    is the context the events are produced in: pass ``contextvars.copy_context()`` taken
    where the request's span is current, since the ASGI server calls this response after
    the endpoint returned, outside that span.
    """

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        *,
        headers: Sequence[tuple[str, str]] = (),
        on_disconnect: Callable[[], None] | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        self._events = events
        self._context = context
        self._on_disconnect = on_disconnect
        self._headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers),
        ]

    async def _pump(self, send: Send) -> None:
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
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        pump = asyncio.get_running_loop().create_task(self._pump(send), context=self._context)
        watch = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await _cancel(pump, watch)
            raise
        if pump.done():
            watch.cancel()
            pump.result()  # re-raise a failure of the pump itself
            return
        await _cancel(pump)
        if self._on_disconnect is not None:
            self._on_disconnect()
