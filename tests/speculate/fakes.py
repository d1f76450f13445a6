"""Fakes shared by the speculation unit tests: a fixed guesser and a backend whose steps
the test holds and releases (so every interleaving is forced by events, never timing)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, ClassVar

from flowopt import Request
from flowopt.backends.base import ModelInfo
from flowopt.speculate import Guess
from flowopt.types import Response, Usage

LABELS = ["billing", "tech"]


class FixedGuesser:
    """A fake guesser: always the same guess."""

    def __init__(self, label: str, confidence: float = 0.95) -> None:
        self.label = label
        self.confidence = confidence

    def guess(self, text: str, labels: Sequence[str], k: int) -> list[Guess]:
        return [Guess(self.label, self.confidence)]

    def observe(self, text: str, actual: str) -> None:
        return None


class StepGatedFakeBackend:
    """A fake backend: ``classify`` answers billing/tech from the input, ``answer``
    echoes its prompt. A step whose gate is in ``gates`` waits for it; ``done`` and
    ``cancelled`` record what happened to each call; ``fail`` maps a step to errors
    raised by its next calls; ``cost`` is put on every response (a priced backend)."""

    provider: ClassVar[str] = "fake"

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.done: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.calls: list[Request] = []
        self.cancelled: list[str] = []
        self.fail: dict[str, list[BaseException]] = defaultdict(list)
        self.cost: float | None = None

    def endpoint_for_display(self) -> str:
        return "fake://gated"

    async def model_info(self) -> ModelInfo:
        return ModelInfo(id="fake", root="fake/fake")

    async def aclose(self) -> None:
        return None

    async def generate(self, request: Request) -> Response:
        self.calls.append(request)
        step = request.step or ""
        text = request.last_user_text
        try:
            gate = self.gates.get(step)
            if gate is not None:
                await gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(text)
            raise
        if self.fail[step]:
            raise self.fail[step].pop(0)
        self.done[step].set()
        if step == "classify":
            out = "billing" if "refund" in text else "tech"
        else:
            out = f"answer to [{text}]"
        usage = Usage(input_tokens=5, output_tokens=3)
        return Response(text=out, model="fake", usage=usage, cost=self.cost)


def steps() -> list[dict[str, Any]]:
    return [
        {
            "name": "classify",
            "prompt": "Classify: {input}",
            "params": {"extra": {"structured_outputs": {"choice": LABELS}}},
        },
        {"name": "answer", "prompt": "Handle {classify}: {input}"},
    ]
