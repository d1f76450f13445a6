"""On the real local vLLM server: a wrong guess's request is cancelled in flight (its
connection closed, which is what makes vLLM abort it) and the run's result is the one a
plain run gives.

The engine's side is not asserted here: on the shared CPU server, vLLM 0.32's
``request_success_total{finished_reason="abort"}`` stays at 0 even for a plain httpx
request cancelled mid-generation, and ``num_requests_running`` counts every client's
requests; docs/speculation.md says how the abort was checked by hand."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import flowopt
from flowopt.registry import guessers
from flowopt.speculate import Guess, speculation_stats

pytestmark = pytest.mark.integration


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
