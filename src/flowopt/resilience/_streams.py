"""Re-wrapping a streamed response: one helper so layers that must watch a stream
(retry before the first chunk, deadlines, shedding slots) do it the same, correct way.

The outer :class:`~flowopt.stream.Stream` yields what ``source`` yields and completes with
``final()``; abandoning it closes the inner stream, so an inner stream is never left
dangling and a cut is always reported as :class:`~flowopt.errors.IncompleteStream`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from flowopt.stream import Stream
from flowopt.types import Chunk, Response

__all__ = ["rewrap"]


def rewrap(
    handle: Response,
    source: AsyncIterator[Chunk],
    final: Callable[[], Response],
    *,
    on_abandon: Callable[[], Awaitable[None]] | None = None,
) -> Response:
    """A new streaming handle over ``source`` (decisions already on ``handle`` are kept)."""
    inner = handle.stream
    started = inner.started_at if inner is not None else None
    stream = Stream(
        source,
        lambda: final().replace(stream=None),
        endpoint=handle.endpoint,
        started_at=started,
        on_abandon=on_abandon,
    )
    return handle.replace(stream=stream)
