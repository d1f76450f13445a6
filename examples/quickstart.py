"""Quick start: a two-step pipeline in Python, run sync, async, streamed and batched.

    FLOWOPT_BASE_URL=http://127.0.0.1:8000 python examples/quickstart.py

Start a local server first with `flowopt backend up` (or point FLOWOPT_BASE_URL elsewhere).
"""

from __future__ import annotations

import asyncio
import os

from flowopt import Result, TokenEvent, pipeline

BASE_URL = os.environ.get("FLOWOPT_BASE_URL", "http://127.0.0.1:8000")

pipe = pipeline(
    "quickstart",
    backend={"vllm": {"base_url": BASE_URL, "model": os.environ.get("FLOWOPT_MODEL", "smollm2")}},
    middleware=["logging"],
    defaults={"temperature": 0, "max_tokens": 48},
    steps=[
        {"name": "answer", "system": "Answer in one sentence.", "prompt": "{input}"},
        {
            "name": "title",
            "prompt": "Give a three-word title for: {answer}",
            "params": {"max_tokens": 12},
        },
    ],
)


async def main() -> None:
    # async, one input
    r = await pipe.ainvoke("Why is the sky blue?", user="alice")
    print("answer:", r.outputs["answer"].strip())
    print("title: ", r.text.strip())
    print(
        "tokens:",
        r.usage.input_tokens,
        "in /",
        r.usage.output_tokens,
        "out;",
        f"{r.latency_ms:.0f} ms",
    )

    # streamed: tokens as they arrive, then the result
    async for ev in pipe.astream("What is a rainbow?"):
        if isinstance(ev, TokenEvent) and ev.step == "answer":
            print(ev.text, end="", flush=True)
        elif isinstance(ev, Result):
            print(f"\n(first token after {ev.ttft_ms:.0f} ms)")

    # many inputs at once: keeps vLLM's continuous batching full
    results = await pipe.abatch(["What is fog?", "What is hail?", "What is dew?"], concurrency=8)
    for res in results:
        assert isinstance(res, Result)
        print("-", res.text.strip())
    await pipe.aclose()


if __name__ == "__main__":
    print(pipe.to_yaml())  # the same pipeline, as a YAML spec
    asyncio.run(main())
