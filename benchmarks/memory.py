#!/usr/bin/env python
"""Benchmark of the memory middleware's request-path cost, against a real vLLM server.

    python benchmarks/memory.py [--vllm-url http://127.0.0.1:8011] [--model smollm2]
                                [--users 100] [--memories 20] [--requests 40] [--json out.json]

1. Seeds ``users x memories`` synthetic facts into an embedded store (Mem0 + qdrant on disk,
   MiniLM) in a temporary directory.
2. Recall latency through :meth:`MemoryMiddleware.recall_into` (the code every request
   runs), p50/p95, over ``requests`` questions of random users.
3. Answer latency of the same requests, one at a time, three modes interleaved: ``off``
   (the bare request, the baseline), ``block`` (the prompt with the recalled memories,
   sent directly: what the longer prompt costs) and ``on`` (through the middleware:
   recall + queueing; the queue is paused so the worker takes no CPU during the run).
   ``on - block`` is what the middleware adds on the request path: the recall, and no
   extraction. Ratios against ``off``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from flowopt.backends.vllm import VLLMBackend
from flowopt.memory import MemoryKey, MemoryMiddleware
from flowopt.middleware.base import PipelineContext
from flowopt.types import Request

PETS = ["dog", "cat", "parrot", "rabbit", "turtle", "hamster"]
CITIES = ["Leeds", "Bristol", "Porto", "Lyon", "Turin", "Graz", "Ghent", "Cork"]
HOBBIES = ["chess", "climbing", "baking", "cycling", "piano", "pottery", "running"]


def _facts(rng: random.Random, n: int) -> list[str]:
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            name = rng.choice(["Rex", "Miso", "Kiwi", "Bo"])
            out.append(f"User has a {rng.choice(PETS)} named {name}{i}.")
        elif kind == 1:
            out.append(f"User lived in {rng.choice(CITIES)} in {2000 + i}.")
        elif kind == 2:
            out.append(
                f"User enjoys {rng.choice(HOBBIES)} on {rng.choice(['Mondays', 'weekends'])}."
            )
        else:
            out.append(f"User's colleague number {i} is called {rng.choice(['Ann', 'Raj', 'Li'])}.")
    return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vllm-url", default="http://127.0.0.1:8011")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--memories", type=int, default=20)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rng = random.Random(7)
    backend = VLLMBackend(args.vllm_url, model=args.model)
    with tempfile.TemporaryDirectory(prefix="flowopt-memory-bench-") as data_dir:
        mw = MemoryMiddleware(long_term=True, data_dir=data_dir, debounce_s=0)
        await mw.setup(PipelineContext(name="bench", backend=backend))
        assert mw.store is not None and mw.queue is not None
        mw.queue.pause()
        t0 = time.perf_counter()
        for u in range(args.users):
            key = MemoryKey("bench", user=f"u{u}")
            mw.store.add_facts(
                key, _facts(rng, args.memories), sources=[f"u{u}-t0"], at="2026-01-01"
            )
        seed_s = time.perf_counter() - t0
        questions = [
            "Where did I live?",
            "What is my pet called?",
            "What do I do on weekends?",
            "Who is my colleague?",
        ]
        reqs = [
            Request.chat(
                [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": rng.choice(questions)},
                ],
                user=f"u{rng.randrange(args.users)}",
                tenant="bench",
                params={"temperature": 0, "max_tokens": 16},
            )
            for _ in range(args.requests)
        ]
        recall_ms: list[float] = []
        injected: list[int] = []
        prepared: list[Request] = []
        for r in reqs:
            detail: dict[str, Any] = {}
            key = mw.key_for(r)
            assert key is not None
            prepared.append(await mw.recall_into(r, key, detail))
            recall_ms.append(detail["recall_ms"])
            injected.append(detail["tokens_injected"])
        await backend.generate(reqs[0])  # warm the server's prefix cache for both runs

        on_recalled: list[int] = []
        on_errors: list[str] = []

        async def one(mode: str, r: Request, p: Request) -> float:
            t = time.perf_counter()
            if mode == "on":
                resp = await mw(r, backend.generate)
                d = next(d for d in resp.decisions if d.middleware == "memory")
                on_recalled.append(int(d.detail["recalled"]))
                on_errors.append(str(d.detail.get("store_error", "")))
            else:  # "off": the bare request; "block": the recalled prompt, sent directly
                await backend.generate(r if mode == "off" else p)
            return (time.perf_counter() - t) * 1000

        # interleaved, in a rotating order, so load from other processes hits all three alike
        times: dict[str, list[float]] = {"off": [], "block": [], "on": []}
        modes = ["off", "block", "on"]
        for i, (r, p) in enumerate(zip(reqs, prepared, strict=True)):
            for mode in modes[i % 3 :] + modes[: i % 3]:
                times[mode].append(await one(mode, r, p))
        off, block, on = times["off"], times["block"], times["on"]
        report = {
            "memories": args.users * args.memories,
            "seed_s": round(seed_s, 1),
            "recall_p50_ms": round(_pct(recall_ms, 50), 2),
            "recall_p95_ms": round(_pct(recall_ms, 95), 2),
            "tokens_injected_mean": round(statistics.fmean(injected), 1),
            "answer_off_p50_ms": round(_pct(off, 50), 1),
            "answer_on_p50_ms": round(_pct(on, 50), 1),
            "answer_on_over_off_p50": round(_pct(on, 50) / _pct(off, 50), 3),
            "answer_on_minus_off_mean_ms": round(statistics.fmean(on) - statistics.fmean(off), 1),
            "answer_block_p50_ms": round(_pct(block, 50), 1),
            "answer_on_minus_block_mean_ms": round(
                statistics.fmean(on) - statistics.fmean(block), 1
            ),
            "queued_turns": mw.queue.stats().pending,
            "on_run_recalled_mean": round(statistics.fmean(on_recalled), 2),
            "on_run_recall_errors": [e for e in on_errors if e],
        }
        await mw.aclose()
    await backend.aclose()
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))  # noqa: ASYNC240


if __name__ == "__main__":
    asyncio.run(main())
