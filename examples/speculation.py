"""Workflow speculation: start the answer step on a guess of the classifier's label.

    FLOWOPT_BASE_URL=http://127.0.0.1:8000 python examples/speculation.py

Step ``classify`` picks a label with a structured ``choice``; step ``answer`` handles the
request for that label. The ``lookup`` guesser remembers what ``classify`` returned for
an input before, so the second time a request comes in, ``answer`` starts at once,
alongside ``classify``, and is kept only if the label matches (docs/speculation.md).
Each result carries its speculation record (``Result.speculation``: outcome, saved or
lost time, wasted tokens); whether a guess is started also depends on the gate (the
server's queue, the waste budget), so the outcome line can say ``skipped_queue``.
"""

from __future__ import annotations

import asyncio
import os

from flowopt import pipeline
from flowopt.speculate import speculation_stats

BASE_URL = os.environ.get("FLOWOPT_BASE_URL", "http://127.0.0.1:8000")
LABELS = ["billing", "technical", "other"]

steps = [
    {
        "name": "classify",
        "prompt": "Is this request about billing, technical, or other?\n{input}\nLabel:",
        "params": {"max_tokens": 8, "extra": {"structured_outputs": {"choice": LABELS}}},
    },
    {
        "name": "answer",
        "system": "You are the support handler for {classify} requests. One sentence.",
        "prompt": "{input}",
    },
]
backend = {"vllm": {"base_url": BASE_URL, "model": os.environ.get("FLOWOPT_MODEL", "smollm2")}}
spec = pipeline(
    "support-speculative",
    backend=backend,
    defaults={"temperature": 0, "max_tokens": 32},
    steps=steps,
    speculate=[{"from": "classify", "to": "answer", "guesser": "lookup"}],
)
plain = pipeline(
    "support-plain", backend=backend, defaults={"temperature": 0, "max_tokens": 32}, steps=steps
)


async def main() -> None:
    questions = ["I was charged twice this month.", "The app crashes when I log in."]
    guessed = []
    for q in questions * 2:  # the second round: the lookup guesser has seen each input
        on = await spec.ainvoke(q)
        off = await plain.ainvoke(q)
        assert on.outputs == off.outputs, "speculation must never change a result"
        # the run's own ledger: what the gate did and what a wrong guess burnt
        (record,) = on.speculation
        guessed.append(record.guess is not None)
        print(
            f"{on.outputs['classify']:>10}  {on.latency_ms:7.0f} ms  {record.outcome:>13}"
            f"  wasted {on.wasted.total_tokens:3d} tok  {on.text[:40]!r}"
        )
    s = speculation_stats(spec)["classify->answer"]
    print(f"speculated {s.speculated} of {s.runs} runs, {s.hits} hits, {s.misses} misses")
    assert guessed == [False, False, True, True]  # only the repeated inputs had a guess
    await spec.aclose()
    await plain.aclose()


if __name__ == "__main__":
    asyncio.run(main())
