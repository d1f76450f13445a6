"""Per-token prices of the two local tiers, from their measured throughput.

    python benchmarks/tier_prices.py [--smollm2 http://127.0.0.1:8000]
        [--qwen http://127.0.0.1:8001] [--machine-per-hour 0.10]
        [--out docs/results/tier-prices.json]

For each server (`flowopt backend up --model smollm2`, `--model qwen0.5b`), greedy, never
a ``seed`` (it crashes this vLLM build):

* decode: 64 output tokens (``ignore_eos``) from a short prompt, one stream (median of 3)
  and 8 streams at once (aggregate output tokens / wall time; median of 2 rounds);
* prefill: prompt tokens / latency of a ~1000-token prompt with ``max_tokens=1`` (median
  of 3; each prompt starts differently, so the prefix cache does not serve it).

Prices: :meth:`flowopt.Price.from_throughput` with the 8-stream decode throughput (what a
shared server serves) and the prefill throughput, for a machine of ``--machine-per-hour``
(each tier alone on its own machine of that price). The figures depend on how busy the
machine is; the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from flowopt.routing.pricing import Price

FILLER = (
    "The warehouse ships orders on weekdays; returns are accepted within thirty days "
    "when the item is unused and in its original box. "
)


async def _chat(
    client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int
) -> tuple[dict[str, Any], float]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    t0 = time.perf_counter()
    r = await client.post(f"{url}/v1/chat/completions", json=body)
    r.raise_for_status()
    return r.json()["usage"], time.perf_counter() - t0


async def measure(url: str, model: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=600) as client:
        await _chat(client, url, model, "Hello.", 4)  # warm-up
        single = []
        for i in range(3):
            usage, s = await _chat(client, url, model, f"Tell a story about ship {i}.", 64)
            single.append(usage["completion_tokens"] / s)
        batched = []
        for r in range(2):
            t0 = time.perf_counter()
            outs = await asyncio.gather(
                *(
                    _chat(client, url, model, f"Tell a story about ship {r}-{i}.", 64)
                    for i in range(8)
                )
            )
            batched.append(
                sum(u["completion_tokens"] for u, _ in outs) / (time.perf_counter() - t0)
            )
        prefill = []
        for i in range(3):
            usage, s = await _chat(client, url, model, f"Note {i}: " + FILLER * 45, 1)
            prefill.append(usage["prompt_tokens"] / s)
    return {
        "decode_tok_s_1": round(statistics.median(single), 1),
        "decode_tok_s_8": round(statistics.median(batched), 1),
        "prefill_tok_s": round(statistics.median(prefill), 1),
        "runs": {"single": single, "batched_8": batched, "prefill": prefill},
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2", default="http://127.0.0.1:8000")
    ap.add_argument("--qwen", default="http://127.0.0.1:8001")
    ap.add_argument("--machine-per-hour", type=float, default=0.10)
    ap.add_argument("--out", default="docs/results/tier-prices.json")
    args = ap.parse_args()
    result: dict[str, Any] = {
        "machine_per_hour": args.machine_per_hour,
        "load_before": os.getloadavg()[0],
        "models": {},
    }
    for name, url in (("smollm2", args.smollm2), ("qwen0.5b", args.qwen)):
        m = await measure(url.rstrip("/"), name)
        price = Price.from_throughput(
            args.machine_per_hour, m["decode_tok_s_8"], input_tokens_per_s=m["prefill_tok_s"]
        )
        m["price"] = {
            "input_per_1k": float(f"{price.input_per_1k:.3g}"),
            "output_per_1k": float(f"{price.output_per_1k:.3g}"),
        }
        result["models"][name] = m
        print(name, {k: v for k, v in m.items() if k != "runs"}, flush=True)
    result["load_after"] = os.getloadavg()[0]
    s, q = result["models"]["smollm2"]["price"], result["models"]["qwen0.5b"]["price"]
    result["ratio_qwen_smollm2"] = {k: round(q[k] / s[k], 2) for k in s}
    print("qwen0.5b / smollm2 price:", result["ratio_qwen_smollm2"])
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")  # noqa: ASYNC240


if __name__ == "__main__":
    asyncio.run(main())
