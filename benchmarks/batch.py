"""Batch jobs against a real OpenAI-compatible server, through the gateway.

    python benchmarks/batch.py --base-url http://127.0.0.1:8011/v1 --model smollm2 \
        --out docs/results/batch.json

Two parts; every figure is measured in the same run, through the same gateway:

1. throughput: ``--requests`` chat requests (default 200) sent (a) one at a time by the
   client, (b) all at once by the client (asyncio, one connection each), (c) as one batch
   (``/v1/files`` + ``/v1/batches``, the batch worker's ``--concurrency`` lines in flight):
   total time and requests/s, each as a ratio to one-at-a-time.
2. interactive p99: a sequential interactive client (``--interactive`` requests) alone,
   then while a batch runs with batch priority (lines at -100), then while the same batch
   runs at the interactive priority (0). The pipeline has ``shed`` (max_concurrency
   ``--slots``, a queue) in front of the server, which admits higher priorities first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

from flowopt import pipeline
from flowopt.gateway._background import BackgroundServer
from flowopt.gateway.app import create_app
from flowopt.spec import BatchSettings, GatewaySpec

CHAT = "/v1/chat/completions"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def bodies(model: str, n: int, max_tokens: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "model": model,
            "max_tokens": max_tokens,
            "temperature": 0,
            "messages": [{"role": "user", "content": f"[{tag}] Write a fact about number {i}."}],
        }
        for i in range(n)
    ]


def gateway(args: argparse.Namespace, store: Path, priority: int) -> BackgroundServer:
    middleware: list[Any] = [{"shed": {"max_concurrency": args.slots, "max_queue": 512}}]
    pipe = pipeline(
        "bench",
        backend={"vllm": {"base_url": args.base_url, "model": args.model, "timeout": 300}},
        middleware=middleware,
        steps=[{"name": "answer", "prompt": "{input}"}],
    )
    settings = GatewaySpec(
        batch=BatchSettings(store=str(store), concurrency=args.concurrency, priority=priority),
        max_in_flight=1024,
    )
    return BackgroundServer(create_app(pipe, settings))


def run_batch(client: openai.OpenAI, items: list[dict[str, Any]]) -> tuple[float, Any]:
    lines = [
        json.dumps({"custom_id": f"b{i}", "method": "POST", "url": CHAT, "body": b})
        for i, b in enumerate(items)
    ]
    t0 = time.perf_counter()
    f = client.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch")
    job = client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
    while job.status not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(0.2)
        job = client.batches.retrieve(job.id)
    return time.perf_counter() - t0, job


def one_at_a_time(client: openai.OpenAI, items: list[dict[str, Any]]) -> float:
    t0 = time.perf_counter()
    for body in items:
        client.chat.completions.create(**body)
    return time.perf_counter() - t0


def all_at_once(base: str, items: list[dict[str, Any]]) -> tuple[float, int]:
    async def go() -> tuple[float, int]:
        client = openai.AsyncOpenAI(base_url=base, api_key="none", max_retries=0, timeout=600)
        t0 = time.perf_counter()
        out = await asyncio.gather(
            *(client.chat.completions.create(**b) for b in items), return_exceptions=True
        )
        await client.close()
        return time.perf_counter() - t0, sum(isinstance(o, Exception) for o in out)

    return asyncio.run(go())


def throughput(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n = args.requests
    with gateway(args, tmp / "t.sqlite", -100) as srv:
        base = srv.base_url + "/v1"
        client = openai.OpenAI(base_url=base, api_key="none", max_retries=0, timeout=600)
        client.chat.completions.create(**bodies(args.model, 1, 4, "warm")[0])
        seq = one_at_a_time(client, bodies(args.model, n, args.max_tokens, "seq"))
        burst, failed = all_at_once(base, bodies(args.model, n, args.max_tokens, "all"))
        batch_s, job = run_batch(client, bodies(args.model, n, args.max_tokens, "batch"))
    out = {
        "requests": n,
        "max_tokens": args.max_tokens,
        "one_at_a_time_s": round(seq, 2),
        "all_at_once_s": round(burst, 2),
        "all_at_once_failed": failed,
        "batch_s": round(batch_s, 2),
        "batch_completed": job.request_counts.completed,
        "batch_concurrency": args.concurrency,
    }
    for key in ("one_at_a_time", "all_at_once", "batch"):
        out[f"{key}_rps"] = round(n / out[f"{key}_s"], 2)
        out[f"{key}_speedup"] = round(seq / out[f"{key}_s"], 2)
    return out


def interactive(
    client: openai.OpenAI, model: str, n: int, max_tokens: int, tag: str
) -> list[float]:
    lat = []
    for body in bodies(model, n, max_tokens, tag):
        t0 = time.perf_counter()
        client.chat.completions.create(**body)
        lat.append((time.perf_counter() - t0) * 1000)
    return lat


def priority_part(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"slots": args.slots, "batch_concurrency": args.concurrency}
    runs = {"alone": None, "batch_priority": -100, "same_priority": 0}
    for label in args.priority_order.split(","):
        priority = runs[label]
        with gateway(args, tmp / f"p{label}.sqlite", priority or 0) as srv:
            base = srv.base_url + "/v1"
            client = openai.OpenAI(base_url=base, api_key="none", max_retries=0, timeout=600)
            client.chat.completions.create(**bodies(args.model, 1, 4, "warm")[0])
            job = None
            if priority is not None:
                lines = [
                    json.dumps({"custom_id": f"b{i}", "method": "POST", "url": CHAT, "body": b})
                    for i, b in enumerate(bodies(args.model, args.requests, args.max_tokens, "bg"))
                ]
                f = client.files.create(
                    file=("in.jsonl", "\n".join(lines).encode()), purpose="batch"
                )
                job = client.batches.create(
                    input_file_id=f.id, endpoint=CHAT, completion_window="24h"
                )
                time.sleep(2.0)  # let the batch fill the slots before measuring
            lat = interactive(client, args.model, args.interactive, args.max_tokens, label)
            if job is not None:
                client.batches.cancel(job.id)
        out[label] = {
            "p50_ms": round(pct(lat, 0.5), 1),
            "p99_ms": round(pct(lat, 0.99), 1),
            "mean_ms": round(sum(lat) / len(lat), 1),
        }
    for label in ("batch_priority", "same_priority"):
        out[label]["p99_vs_alone"] = round(out[label]["p99_ms"] / out["alone"]["p99_ms"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8011/v1")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=16, help="batch lines in flight")
    ap.add_argument("--slots", type=int, default=8, help="shed max_concurrency")
    ap.add_argument("--interactive", type=int, default=30)
    ap.add_argument("--parts", default="throughput,priority")
    ap.add_argument(
        "--priority-order",
        default="alone,batch_priority,same_priority",
        help="order of the priority part's runs (alternate it between runs: the load drifts)",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as d:
        if "throughput" in args.parts:
            result["throughput"] = throughput(args, Path(d))
            print(json.dumps(result["throughput"], indent=2), flush=True)
        if "priority" in args.parts:
            result["priority"] = priority_part(args, Path(d))
            print(json.dumps(result["priority"], indent=2), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
