"""Triage and cascade over two priced tiers, with the cost of every answer.

    FLOWOPT_BASE_URL=http://127.0.0.1:8000 python examples/triage_cascade.py

On this CPU both tiers are the same small model behind two backend entries (a "cheap" one
with short answers and a "strong" one), priced differently; on GPUs point ``strong`` at an
8B server and ``default`` at a 1B one (see docs/triage.md). Shows: rules triage with the
decision and its reason, a cascade that accepts a confident cheap answer or escalates, the
cost of each answer next to what always-strongest would have cost, and a streamed cascade.
"""

from __future__ import annotations

import asyncio
import os

from flowopt import Params, Request, pipeline

BASE_URL = os.environ.get("FLOWOPT_BASE_URL", "http://127.0.0.1:8000")
MODEL = os.environ.get("FLOWOPT_MODEL", "smollm2")

TIERS = [
    {
        "name": "cheap",
        "backend": "default",
        "price": {"input_per_1k": 0.0001, "output_per_1k": 0.0002},
    },
    {
        "name": "strong",
        "backend": "strong",
        "price": {"input_per_1k": 0.003, "output_per_1k": 0.006},
    },
]
BACKENDS = {"strong": {"vllm": {"base_url": BASE_URL, "model": MODEL}}}
STEPS = [{"name": "answer", "prompt": "{input}", "params": {"max_tokens": 24, "temperature": 0}}]


def show(label: str, decisions: list[dict[str, object]], cost: float | None) -> None:
    for d in decisions:
        if d["middleware"] in ("triage", "cascade"):
            print(
                f"  {label}: {d['action']} tier={d['tier']} cost={cost:.6f} "
                f"always-strong={d['strongest_cost']:.6f}"
            )
            if "reason" in d:
                print(f"    reason: {d['reason']}")


async def main() -> None:
    triage = pipeline(
        "triage-demo",
        backend={"vllm": {"base_url": BASE_URL, "model": MODEL}},
        backends=BACKENDS,
        middleware=[
            {
                "triage": {
                    "tiers": TIERS,
                    "classifier": {
                        "rules": {
                            "rules": [
                                {"pattern": r"\b(prove|derive|step by step)\b", "then": "strong"},
                                {"min_chars": 300, "then": "strong"},
                            ]
                        }
                    },
                }
            }
        ],
        steps=STEPS,
    )
    print("triage (rules):")
    for q in ("What is the capital of France?", "Prove step by step that 17 is prime."):
        r = await triage.ainvoke(q)
        show(q[:32], r.to_dict()["decisions"], r.cost)
    await triage.aclose()

    cascade = pipeline(
        "cascade-demo",
        backend={"vllm": {"base_url": BASE_URL, "model": MODEL}},
        backends=BACKENDS,
        middleware=[{"cascade": {"tiers": TIERS, "threshold": 0.5, "confidence": "mean"}}],
        steps=STEPS,
    )
    print("cascade (accept the cheap answer when its mean token probability >= 0.5):")
    for q in ("Say hello.", "Name the 23rd prime number and explain how you found it."):
        r = await cascade.ainvoke(q)
        show(q[:32], r.to_dict()["decisions"], r.cost)
    resp = await cascade.acall(
        Request.chat("Say hello.", stream=True, params=Params(max_tokens=12, temperature=0))
    )
    assert resp.stream is not None
    text = "".join([c.text async for c in resp.stream])
    final = resp.stream.response
    assert final is not None and final.text == text
    print(f"streamed cascade answer: {text!r} (cost {final.cost:.6f})")
    await cascade.aclose()


if __name__ == "__main__":
    asyncio.run(main())
