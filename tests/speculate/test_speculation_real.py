"""On the real local vLLM server: a wrong guess's request is really aborted by the engine,
not left generating (the engine's own abort counter, read from its /metrics)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence

import httpx
import pytest

import flowopt
from flowopt.registry import guessers
from flowopt.speculate import Guess, speculation_stats

pytestmark = pytest.mark.integration

_ABORTS = re.compile(
    r'^vllm:request_success_total\{[^}]*finished_reason="abort"[^}]*\} (\S+)$', re.M
)


class OppositeGuesser:
    """A fake guesser that always guesses the label it is told A will *not* output."""

    def __init__(self, label: str) -> None:
        self.label = label

    def guess(self, text: str, labels: Sequence[str], k: int) -> list[Guess]:
        return [Guess(self.label, 1.0)]

    def observe(self, text: str, actual: str) -> None:
        return None


def _aborts(vllm_url: str) -> float:
    body = httpx.get(vllm_url.removesuffix("/v1") + "/metrics", timeout=10).text
    return sum(float(v) for v in _ABORTS.findall(body))


async def test_a_wrong_guess_is_aborted_on_the_server(vllm_url: str, served_model: str) -> None:
    backend = {"vllm": {"base_url": vllm_url, "model": served_model, "timeout": 300}}
    # A: a long prompt (prefill takes a while on CPU) and a closed choice, so the
    # guessed B is surely running on the engine when A's answer arrives
    steps = [
        {
            "name": "pick",
            "prompt": "Notes: "
            + "the sky is blue and the grass is green. " * 30
            + "\nAnswer alpha or beta: {input}",
            "params": {
                "temperature": 0,
                "max_tokens": 4,
                "extra": {"structured_outputs": {"choice": ["alpha", "beta"]}},
            },
        },
        {
            "name": "write",
            "prompt": "Write a long story about {pick}.",
            "params": {"temperature": 0, "max_tokens": 400, "extra": {"ignore_eos": True}},
        },
    ]
    plain = flowopt.pipeline("abort-plain", backend=backend, steps=steps[:1])
    actual = (await plain.ainvoke("which?")).text
    await plain.aclose()
    wrong = "beta" if actual == "alpha" else "alpha"
    guessers.register("opposite-test", OppositeGuesser)
    try:
        pipe = flowopt.pipeline(
            "abort-spec",
            backend=backend,
            steps=steps,
            speculate=[
                {"from": "pick", "to": "write", "guesser": {"opposite-test": {"label": wrong}}}
            ],
        )
        before = _aborts(vllm_url)
        result = await pipe.ainvoke("which?")
        await pipe.aclose()
    finally:
        guessers.unregister("opposite-test")
    assert result.outputs["pick"] == actual
    assert speculation_stats(pipe)["pick->write"].misses == 1
    deadline = time.monotonic() + 30
    while _aborts(vllm_url) <= before and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)  # the counter is the server's; poll it, bounded
    assert _aborts(vllm_url) >= before + 1
