"""A streamed answer: an async iterator of chunks that becomes a complete Response.

Why hooks instead of wrapping iterators: every middleware in a stack may care about a
stream (the tracer ends its span at the last chunk, the cache stores the answer only if the
stream finished normally, the cascade decides on the whole text). Each one registers a
hook on the one :class:`Stream` instead of wrapping it in another generator, so a chunk
costs one ``__anext__`` however deep the stack, and there is exactly one consumer.

Hook order matches the non-streaming order: the innermost middleware sees the stream first,
registers first, and its completion hook runs first.

A stream that ends without the producer's final chunk (connection cut, consumer broke off)
never completes: completion hooks do not run, error hooks receive an
:class:`~flowopt.errors.IncompleteStream`, and :meth:`collect` raises it.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from flowopt.errors import IncompleteStream
from flowopt.messages import ToolCallDelta
from flowopt.types import Chunk, Decision, Response

__all__ = ["Stream", "replay", "when_final"]

CompleteHook = Callable[[Response], "Awaitable[Response | None] | Response | None"]
ErrorHook = Callable[[BaseException], Any]
FirstHook = Callable[[Chunk], Any]


class Stream:
    """Single-consumer async iterator of :class:`Chunk` with completion hooks.

    ``source`` yields chunks; once it is exhausted, ``finalize()`` returns the complete
    :class:`Response` (text, usage, finish reason). Build one with a backend's generator or
    with :func:`replay` for an answer that is already known.
    """

    __slots__ = (
        "_added",
        "_done",
        "_each",
        "_error",
        "_finalize",
        "_first",
        "_on_abandon",
        "_on_complete",
        "_on_error",
        "_ready",
        "_response",
        "_source",
        "endpoint",
        "first_chunk_at",
        "started_at",
    )

    def __init__(
        self,
        source: AsyncIterator[Chunk],
        finalize: Callable[[], Response],
        *,
        endpoint: str | None = None,
        started_at: float | None = None,
        on_abandon: Callable[[], Awaitable[None]] | None = None,
        ready: Callable[[], int] | None = None,
    ) -> None:
        self._source = source
        self._ready = ready
        self._on_abandon = on_abandon
        self._finalize = finalize
        self._on_complete: list[CompleteHook] = []
        self._on_error: list[ErrorHook] = []
        self._first: list[FirstHook] = []
        self._each: list[FirstHook] = []
        self._added: list[Decision] = []
        self._done = False
        self._error: BaseException | None = None
        self._response: Response | None = None
        self.endpoint = endpoint
        self.started_at = time.perf_counter() if started_at is None else started_at
        self.first_chunk_at: float | None = None

    # -- hooks -------------------------------------------------------------------------
    def on_complete(self, hook: CompleteHook) -> None:
        """Run ``hook(response)`` when the stream finished normally. A hook may return a
        replacement response (e.g. with a decision or a cost added)."""
        self._on_complete.append(hook)

    def on_error(self, hook: ErrorHook) -> None:
        """Run ``hook(exc)`` when the stream fails or is abandoned before its end."""
        self._on_error.append(hook)

    def on_first_chunk(self, hook: FirstHook) -> None:
        """Run ``hook(chunk)`` at the first chunk (time to first token)."""
        self._first.append(hook)

    def on_chunk(self, hook: FirstHook) -> None:
        """Run ``hook(chunk)`` at every chunk (a cache records the chunk shape with it)."""
        self._each.append(hook)

    def add_decision(self, decision: Decision) -> None:
        self._added.append(decision)

    # -- state -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._done

    @property
    def response(self) -> Response | None:
        """The complete response once the stream ended normally, else None."""
        return self._response

    @property
    def ready(self) -> int:
        """How many further chunks the producer already holds in memory (they arrived in
        the same network read): the next that many ``__anext__`` calls wait for no I/O.
        A relay writes them out together instead of one write each; 0 when unknown."""
        return self._ready() if self._ready is not None else 0

    @property
    def ttft_ms(self) -> float | None:
        if self.first_chunk_at is None:
            return None
        return (self.first_chunk_at - self.started_at) * 1000.0

    # -- iteration -----------------------------------------------------------------------
    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Chunk:
        if self._done:
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        try:
            chunk = await self._source.__anext__()
        except StopAsyncIteration:
            await self._finish()
            raise
        except BaseException as exc:
            await self._fail(exc)
            raise
        if self.first_chunk_at is None:
            self.first_chunk_at = time.perf_counter()
            for hook in self._first:
                hook(chunk)
        for each in self._each:
            each(chunk)
        return chunk

    async def collect(self) -> Response:
        """Consume what is left and return the complete response."""
        async for _ in self:
            pass
        if self._error is not None:
            raise self._error
        assert self._response is not None
        return self._response

    async def aclose(self) -> None:
        """Abandon the stream. If it had not finished, it is reported as incomplete."""
        if self._done:
            return
        close = getattr(self._source, "aclose", None)
        if close is not None:
            await close()
        if self._on_abandon is not None:
            await self._on_abandon()
        await self._fail(
            IncompleteStream(
                "the stream was closed by its consumer before the answer finished",
                endpoint=self.endpoint or "(consumer)",
                client_left=True,
            )
        )

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- internals -----------------------------------------------------------------------
    async def _finish(self) -> None:
        self._done = True
        try:
            # The stream owns the timing: latency from ``started_at`` to the end, TTFT to
            # the first chunk, so a producer's ``finalize`` need not reach back for them.
            produced = self._finalize()
            changes: dict[str, Any] = {
                "latency_ms": (time.perf_counter() - self.started_at) * 1000.0,
                "ttft_ms": self.ttft_ms,
            }
            if self._added:  # one copy for the timing and the decisions
                changes["decisions"] = (*produced.decisions, *self._added)
            response = produced.replace(**changes)
            for hook in self._on_complete:
                out = hook(response)
                if inspect.isawaitable(out):
                    out = await out
                if isinstance(out, Response):
                    response = out
            self._response = response if response.stream is None else response.replace(stream=None)
        except BaseException as exc:
            self._error = exc
            for err_hook in self._on_error:
                err_hook(exc)
            raise

    async def _fail(self, exc: BaseException) -> None:
        if self._done:
            return
        self._done = True
        self._error = exc
        for hook in self._on_error:
            hook(exc)


async def when_final(
    response: Response,
    on_final: CompleteHook,
    on_error: ErrorHook | None = None,
) -> Response:
    """Act on the final response, whether or not it is still streaming: the one helper for
    "now if it is complete, else when its stream ends".

    A complete response: ``on_final(response)`` runs now (awaited if it is a coroutine),
    and what it returns, if a :class:`Response`, is returned in place of ``response``. A
    streaming handle: ``on_final`` becomes a completion hook (what it returns replaces the
    final response when the stream ends), ``on_error`` an error hook (the stream failed or
    was abandoned), and the handle is returned unchanged. Never consumes the stream.
    """
    stream = response.stream
    if stream is None or stream.done:
        out = on_final(response)
        if inspect.isawaitable(out):
            out = await out
        return out if isinstance(out, Response) else response
    stream.on_complete(on_final)
    if on_error is not None:
        stream.on_error(on_error)
    return response


def replay(
    response: Response,
    *,
    chunk_texts: list[str] | None = None,
    started_at: float | None = None,
) -> Response:
    """Turn a complete response into a streaming one that yields ``chunk_texts`` (or the
    whole text as one chunk). Used by caches to answer a streamed request from storage,
    and by the cascade to stream an answer it had to buffer; the replayed text is
    byte-identical to the stored one.

    ``started_at`` (a ``time.perf_counter()`` value) is when the request began: the final
    response's ``latency_ms`` and ``ttft_ms`` are measured from it, so they include the
    work done before the replay (the buffered model call, the cache lookup). Without it
    they measure the replay alone.
    """
    texts = chunk_texts if chunk_texts is not None else [response.text]
    if "".join(texts) != response.text:
        raise ValueError("replay chunks do not add up to the response text")
    started = time.perf_counter() if started_at is None else started_at

    calls = tuple(ToolCallDelta.whole(i, c) for i, c in enumerate(response.tool_calls))

    async def _gen() -> AsyncIterator[Chunk]:
        last = len(texts) - 1
        for i, t in enumerate(texts):
            if i == last:  # tool calls, if any, arrive whole with the last piece
                yield Chunk(t, i, finish_reason=response.finish_reason, tool_calls=calls)
            else:
                yield Chunk(t, i)
        for j, c in enumerate(response.extra_choices, len(texts)):  # n > 1: one piece each
            whole = tuple(ToolCallDelta.whole(k, t) for k, t in enumerate(c.tool_calls))
            yield Chunk(
                c.text,
                j,
                c.logprobs or (),
                c.finish_reason,
                whole,
                c.reasoning_content or "",
                c.index,
            )

    stream = Stream(
        _gen(),
        lambda: response.replace(stream=None),
        endpoint=response.endpoint,
        started_at=started,
    )
    return response.replace(stream=stream)
