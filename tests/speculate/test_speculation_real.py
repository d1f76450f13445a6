"""On the real local vLLM server: a wrong guess's request is cancelled in flight (its
connection closed, which is what makes vLLM abort it), the engine really stops generating
it, and the run's result is the one a plain run gives.

vLLM 0.32's ``request_success_total{finished_reason="abort"}`` stays at 0 on the CPU
build even for a plain cancelled request, so the engine's side is read from what it did:
the guessed B asks for 400 tokens with ``ignore_eos``; once the engine has drained, its
``generation_tokens_total`` has grown by far less than that, which only an abort explains
(a B left running would have generated all 400 before the engine went idle)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import pytest

import flowopt
from flowopt.backends.vllm import _metric_sum
from flowopt.registry import guessers
from flowopt.speculate import Guess, speculation_stats

pytestmark = pytest.mark.integration


def _metric(text: str, name: str) -> float:
    """A metric summed over its labels; a missing one fails the test (never reads as 0)."""
    total = _metric_sum(text, name)
    assert total is not None, f"/metrics has no {name} sample"
    return total


async def _drained_generation_tokens(vllm_url: str) -> float:
    """Wait (polling /metrics, up to 120 s) until the engine runs and queues nothing,
    then return its generation token counter."""
    root = vllm_url.rstrip("/").removesuffix("/v1")
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(1200):
            text = (await client.get(root + "/metrics")).text
            busy = _metric(text, "vllm:num_requests_running") + _metric(
                text, "vllm:num_requests_waiting"
            )
            if busy == 0:
                return _metric(text, "vllm:generation_tokens_total")
            await asyncio.sleep(0.1)  # polling a condition, with a bound
    raise AssertionError(f"the engine at {root} did not drain within 120 s")


class OppositeGuesser:
    """A fake guesser that always guesses the label it is told A will *not* output."""

    def __init__(self, label: str) -> None:
        self.label = label

    def guess(self, text: str, labels: Sequence[str], k: int) -> list[Guess]:
        return [Guess(self.label, 1.0)]

    def observe(self, text: str, actual: str) -> None:
        return None


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
    before = await _drained_generation_tokens(vllm_url)
    try:
        pipe = flowopt.pipeline(
            "abort-spec",
            backend=backend,
            steps=steps,
            speculate=[
                {
                    "from": "pick",
                    "to": "write",
                    "guesser": {"opposite-test": {"label": wrong}},
                    "max_waste": 1.0,  # no waste ledger: the first run speculates
                }
            ],
        )
        result = await pipe.ainvoke("which?")
        await pipe.aclose()
    finally:
        guessers.unregister("opposite-test")
    assert result.outputs["pick"] == actual
    stats = speculation_stats(pipe)["pick->write"]
    assert (stats.speculated, stats.misses, stats.hits) == (1, 1, 0)
    assert stats.cancelled == 1  # the guessed B was still generating when A answered
    assert [h.step for h in result.hops] == ["pick", "write"]  # no hop of the guessed B
    # the engine's side: A and the plain re-run of B generated the committed tokens (B's
    # 400); the cancelled guessed B stopped early (left running it would add another 400)
    generated = await _drained_generation_tokens(vllm_url) - before
    committed = result.usage.output_tokens
    assert committed >= 400
    assert committed <= generated < committed + 400, (generated, committed)
