"""Read one streamed answer from an OpenAI-compatible server into a :class:`Stream`.

Kept apart from :mod:`flowopt.backends.vllm` (which sends the request and owns the replicas)
because this is the per-token hot path: it splits SSE lines from raw bytes, parses each
event once, and keeps per choice (OpenAI's ``n``) what the final :class:`Response` needs —
text, logprobs, tool-call deltas, reasoning, finish reason and the engine's unmodelled
fields (``passthrough``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from flowopt._answer import EMPTY
from flowopt.backends._openai_wire import PassthroughMemo, loads_event, parse_chunk, passthrough_of
from flowopt.backends.http import (
    RawResponse,
    TransportBroken,
    TransportConnectError,
    TransportTimeout,
)
from flowopt.errors import BackendProtocolError, IncompleteStream
from flowopt.messages import ToolCallDelta, _deep_freeze, assemble_tool_calls
from flowopt.stream import Stream
from flowopt.types import Choice, Chunk, Request, Response, TokenLogprob, Usage

__all__ = ["streamed_response"]

TRANSPORT_ERRORS = (TransportTimeout, TransportConnectError, TransportBroken)


class _Acc:
    """What one choice of a stream has said so far."""

    __slots__ = ("deltas", "finish", "lps", "passthrough", "texts", "thoughts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.lps: list[TokenLogprob] = []
        self.deltas: list[ToolCallDelta] = []
        self.thoughts: list[str] = []
        self.finish: str | None = None
        self.passthrough: Mapping[str, Any] = EMPTY

    def add(self, chunk: Chunk) -> None:
        if chunk.finish_reason is not None:
            self.finish = chunk.finish_reason
        self.texts.append(chunk.text)
        if chunk.logprobs:
            self.lps.extend(chunk.logprobs)
        if chunk.tool_calls:
            self.deltas.extend(chunk.tool_calls)
        if chunk.reasoning:
            self.thoughts.append(chunk.reasoning)
        if chunk.passthrough:
            self.passthrough = chunk.passthrough

    def choice(self, index: int, logprobs: bool) -> Choice:
        return Choice(
            index,
            "".join(self.texts),
            self.finish,
            tuple(self.lps) if logprobs else None,
            assemble_tool_calls(self.deltas),
            "".join(self.thoughts) if self.thoughts else None,
        )


def _final_passthrough(
    accs: list[tuple[int, _Acc]], tail: Mapping[str, Any], kind: str
) -> Mapping[str, Any]:
    """One mirror for the whole answer, as a non-streamed body would have it: top-level
    fields from the events (the usage event's last), each choice's last unmodelled
    fields (``stop_reason`` is sent with the finish)."""
    out: dict[str, Any] = {}
    mirrors: list[Any] = []
    for _, acc in accs:
        pt = acc.passthrough
        out.update({k: v for k, v in pt.items() if k != "choices"})
        inner = pt.get("choices")
        mirrors.append(inner[0] if inner else {})
    out.update(tail)
    if any(mirrors):
        out["choices"] = mirrors
    return _deep_freeze(out) if out else EMPTY


def streamed_response(
    request: Request,
    resp: RawResponse,
    *,
    url: str,
    served: str,
    started: float,
    backend: str,
    release: Callable[[], Awaitable[None]],
) -> Response:
    """A streaming :class:`Response` over ``resp``'s server-sent events. ``release`` runs
    once when the body is done with (finished, failed or abandoned)."""
    state: dict[str, Any] = {"usage": Usage(), "model": served, "done": False, "tail": EMPTY}
    accs: dict[int, _Acc] = {}
    memo = PassthroughMemo()
    kind = request.kind
    counter = [0]
    ready = [0]  # events parsed from the current read and not yet yielded

    def partial() -> str:
        acc = accs.get(0)
        return "".join(acc.texts) if acc else ""

    def event(data: bytes) -> Chunk | None:
        try:
            obj = loads_event(data)
        except ValueError:
            text = data[:200].decode("utf-8", "replace")
            raise BackendProtocolError(
                f"a stream event is not JSON: {text!r}", endpoint=url
            ) from None
        if isinstance(obj, dict) and "error" in obj and "choices" not in obj:
            raise IncompleteStream(
                f"the server reported an error mid-stream: {obj['error']}",
                endpoint=url,
                partial_text=partial(),
            )
        chunk, usage, model = parse_chunk(obj, kind=kind, endpoint=url, index=counter[0], memo=memo)
        if usage is not None:
            state["usage"] = usage
            state["tail"] = passthrough_of({**obj, "choices": []}, kind)
        if model:
            state["model"] = model
        if chunk is None:
            return None
        acc = accs.get(chunk.choice)
        if acc is None:
            acc = accs[chunk.choice] = _Acc()
        acc.add(chunk)
        counter[0] += 1
        return chunk

    async def chunks() -> AsyncIterator[Chunk]:
        try:
            # Lines are split from the raw bytes here rather than with
            # ``resp.aiter_lines()``: that stacks three generators and a text decoder
            # on every network read, a large share of the per-token cost. The JSON is
            # parsed from bytes (orjson when installed), see ``loads_event``.
            #
            # The events of one read are parsed before the first is yielded, so the
            # stream knows how many more it holds (``Stream.ready``): a relay writes
            # those out together, one write instead of one per event. An event that
            # fails to parse fails the stream after the events before it.
            pending = b""
            async for raw in resp.iter_chunks():
                if b"\r" in raw:  # SSE allows CRLF and lone CR line ends
                    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                lines = (pending + raw).split(b"\n") if pending else raw.split(b"\n")
                pending = lines.pop()
                got: list[Chunk] = []
                failed: Exception | None = None
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        # Read on to the end of the body instead of breaking off: a
                        # response closed before its end closes its keep-alive
                        # connection, and every streamed request would pay a new TCP
                        # connection.
                        state["done"] = True
                        continue
                    try:
                        chunk = event(data)
                    except Exception as exc:
                        failed = exc
                        break
                    if chunk is not None:
                        got.append(chunk)
                left = len(got)
                for chunk in got:
                    left -= 1
                    ready[0] = left
                    yield chunk
                if failed is not None:
                    raise failed
            if pending.startswith(b"data:"):  # a last line without its line end
                data = pending[5:].strip()
                if data == b"[DONE]":
                    state["done"] = True
                else:
                    chunk = event(data)
                    if chunk is not None:
                        yield chunk
        except TRANSPORT_ERRORS as exc:
            raise IncompleteStream(
                f"the stream broke off: {exc}", endpoint=url, partial_text=partial()
            ) from None
        finally:
            await release()
        if not state["done"] or not accs or any(a.finish is None for a in accs.values()):
            raise IncompleteStream(
                "the stream ended before the server's final event",
                endpoint=url,
                partial_text=partial(),
            )

    def finalize() -> Response:  # the stream stamps latency_ms and ttft_ms
        ordered = sorted(accs.items())
        logprobs = request.params.logprobs
        first = ordered[0][1].choice(ordered[0][0], logprobs)
        return Response(
            text=first.text,
            model=state["model"],
            usage=state["usage"],
            finish_reason=first.finish_reason,
            logprobs=first.logprobs,
            backend=backend,
            endpoint=url,
            tool_calls=first.tool_calls,
            reasoning_content=first.reasoning_content,
            extra_choices=tuple(a.choice(i, logprobs) for i, a in ordered[1:]),
            passthrough=_final_passthrough(ordered, state["tail"], kind),
        )

    stream = Stream(
        chunks(),
        finalize,
        endpoint=url,
        started_at=started,
        on_abandon=release,
        ready=lambda: ready[0],
    )
    return Response(
        text="", model=served, finish_reason=None, backend=backend, endpoint=url, stream=stream
    )
