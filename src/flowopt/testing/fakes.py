"""FakeBackend: a backend that needs no server. For unit tests only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import ClassVar

from flowopt.backends.base import ModelInfo
from flowopt.stream import Stream
from flowopt.types import Chunk, Request, Response, Usage

__all__ = ["FakeBackend"]


def _default_answer(request: Request) -> str:
    return f"echo: {request.last_user_text}"


class FakeBackend:
    """Answers ``answer(request)`` (default: ``"echo: <last user text>"``), counts calls,
    and can stream word by word. ``fail`` (an exception) is raised on every call when set.
    Token counts are word counts: good enough for accounting logic, not for tokenizers."""

    provider: ClassVar[str] = "fake"

    def __init__(
        self,
        answer: Callable[[Request], str] | None = None,
        *,
        model: str = "fake-model",
        delay: float = 0.0,
        fail: BaseException | None = None,
        name: str = "fake",
    ) -> None:
        self._answer = answer or _default_answer
        self.model = model
        self.delay = delay
        self.fail = fail
        self.name = name
        self.calls: list[Request] = []

    def endpoint_for_display(self) -> str:
        return f"fake://{self.name}"

    async def model_info(self) -> ModelInfo:
        return ModelInfo(id=self.model, root=f"fake/{self.model}")

    async def aclose(self) -> None:
        return None

    async def generate(self, request: Request) -> Response:
        self.calls.append(request)
        started = time.perf_counter()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        text = self._answer(request)
        usage = Usage(
            input_tokens=sum(len(m.text.split()) for m in request.messages)
            or len((request.prompt or "").split()),
            output_tokens=len(text.split()),
        )
        if not request.stream:
            return Response(
                text=text,
                model=self.model,
                usage=usage,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                backend=self.name,
                endpoint=self.endpoint_for_display(),
            )
        words = text.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]

        async def gen() -> AsyncIterator[Chunk]:
            last = len(pieces) - 1
            for i, piece in enumerate(pieces):
                await asyncio.sleep(0)
                yield Chunk(piece, i, finish_reason="stop" if i == last else None)

        def final() -> Response:  # the stream stamps latency_ms and ttft_ms
            return Response(
                text=text,
                model=self.model,
                usage=usage,
                backend=self.name,
                endpoint=self.endpoint_for_display(),
            )

        stream = Stream(gen(), final, endpoint=self.endpoint_for_display(), started_at=started)
        return Response(text="", model=self.model, finish_reason=None, stream=stream)
