"""``DisconnectWatch``: one watcher per request cancels the work current when the client
leaves, in the request's own task or the stream's pump, and tells a client leaving apart
from any other cancellation. The ASGI ``receive`` here is a queue the test feeds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flowopt.gateway._disconnect import ClientLeft, DisconnectWatch, EventStreamResponse


class Client:
    """The ASGI ``receive`` side of one request: nothing until the test says it left."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        return await self.messages.get()

    def leave(self) -> None:
        self.messages.put_nowait({"type": "http.disconnect"})


async def test_run_returns_the_work_and_close_stops_the_watcher() -> None:
    client = Client()
    watch = DisconnectWatch(client.receive)

    async def work() -> int:
        await asyncio.sleep(0)
        return 7

    assert await watch.run(work()) == 7
    assert watch._task is not None
    watch.close()
    await asyncio.sleep(0)
    assert watch._task.cancelled() and not watch.left


async def test_client_leaving_cancels_the_work_in_this_task() -> None:
    client = Client()
    watch = DisconnectWatch(client.receive)
    started, cleaned = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # a backend call that never answers
        finally:
            cleaned.set()

    async def request() -> str:
        try:
            await watch.run(work())
        except ClientLeft:
            return "left"
        return "answered"

    served = asyncio.ensure_future(request())
    await started.wait()
    client.leave()
    assert await asyncio.wait_for(served, 10) == "left"
    assert cleaned.is_set() and watch.left
    # the request's task was un-cancelled: it goes on normally after ClientLeft
    assert served.cancelling() == 0


async def test_another_cancellation_is_not_taken_for_the_client_leaving() -> None:
    client = Client()
    watch = DisconnectWatch(client.receive)
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.Event().wait()

    served = asyncio.ensure_future(watch.run(work()))
    await started.wait()
    served.cancel()  # e.g. the server shutting down
    with pytest.raises(asyncio.CancelledError):
        await served
    watch.close()


async def test_a_pump_started_after_the_client_left_is_cancelled_inside_its_generator() -> None:
    """The disconnect arrived between opening the stream and pumping it: the pump still
    gets its first step, so its generator's ``finally`` (closing the backend stream)
    runs, and the watch reports the client gone."""
    client = Client()
    watch = DisconnectWatch(client.receive)
    closed = asyncio.Event()

    async def opening() -> None:
        await asyncio.sleep(0)

    await watch.run(opening())
    client.leave()
    for _ in range(3):  # loop turns: the watcher reads the disconnect
        await asyncio.sleep(0)
    assert watch.left

    async def events() -> Any:
        try:
            yield b"data: 1\n\n"
            await asyncio.Event().wait()
            yield b"never"
        finally:
            closed.set()

    async def pump() -> None:
        gen = events()
        try:
            async for _ in gen:
                await asyncio.sleep(0)
        finally:
            await gen.aclose()

    with pytest.raises(ClientLeft):
        await watch.guard(pump())
    assert closed.is_set()
    watch.close()


def _endless(closed: list[bool]) -> Any:
    async def events() -> Any:
        try:
            while True:
                yield b"data: x\n\n"
                await asyncio.sleep(0.01)
        finally:
            closed.append(True)

    return events()


async def _nothing_sent(message: Any) -> None:
    return None


async def test_a_client_leaving_as_the_stream_opens_ends_it_as_a_disconnect() -> None:
    """The disconnect is read in the same loop turn in which the call that opens the
    stream completes: the watcher's cancel is still pending when the pump starts in the
    same task. It must reach that task once, so the request ends as a client that left
    (a second cancel would make the first look like someone else's)."""
    loop = asyncio.get_running_loop()
    client = Client()
    opened: asyncio.Future[str] = loop.create_future()
    closed: list[bool] = []
    left: list[int] = []
    watch = DisconnectWatch(client.receive)

    async def open_stream() -> str:
        return await opened

    async def request() -> None:  # what Gateway._generate and GatewayApp.__call__ do
        await watch.run(open_stream())
        answer = EventStreamResponse(
            _endless(closed), on_disconnect=lambda: left.append(1), watch=watch
        )
        await answer({}, client.receive, _nothing_sent)

    task = asyncio.ensure_future(request())
    for _ in range(3):  # the watcher waits in receive, the request in run
        await asyncio.sleep(0)

    def both() -> None:  # the client's EOF and the engine's headers, one selector turn
        client.leave()
        opened.set_result("response")

    loop.call_soon(both)
    await asyncio.wait_for(task, 5)  # ends normally: no CancelledError escapes
    assert left == [1] and closed == [True] and watch.left


async def test_a_shutdown_in_the_turn_the_client_leaves_stays_a_cancellation() -> None:
    """The server cancels the request task (shutdown) in the same turn in which the
    client's disconnect is read: the server's cancellation goes on; it is not turned
    into a client that left."""
    loop = asyncio.get_running_loop()
    client = Client()
    started = asyncio.Event()
    closed: list[bool] = []
    left: list[int] = []

    async def events() -> Any:
        started.set()
        async for data in _endless(closed):
            yield data

    answer = EventStreamResponse(events(), on_disconnect=lambda: left.append(1))
    task = asyncio.ensure_future(answer({}, client.receive, _nothing_sent))
    await started.wait()
    await asyncio.sleep(0.005)

    def both() -> None:
        client.leave()
        task.cancel()

    loop.call_soon(both)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert left == [] and closed == [True]


async def test_a_failing_send_finishes_the_answer_through_on_error() -> None:
    """Anything but a cancellation or the client leaving that ends the stream early (here
    the server's ``send`` failing) reaches ``on_error`` once and goes on, and the event
    generator is closed: the request's span and in-flight count are finished."""
    client = Client()
    closed: list[bool] = []
    errors: list[Exception] = []
    sent: list[Any] = []

    async def send(message: Any) -> None:
        if len(sent) == 2:  # the start and one event went out
            raise RuntimeError("the transport broke")
        sent.append(message)

    answer = EventStreamResponse(
        _endless(closed),
        on_disconnect=lambda: pytest.fail("not a disconnect"),
        on_error=errors.append,
    )
    with pytest.raises(RuntimeError, match="transport broke"):
        await answer({}, client.receive, send)
    assert [type(e) for e in errors] == [RuntimeError] and closed == [True]
