"""The five serving levers, one added at a time, on one FAQ-shaped workload.

    python benchmarks/levers.py [--requests 40] [--out docs/results/levers.json]

Configurations (each starts its own local server of SmolLM2-135M, one after the other):

1. ``baseline``: vLLM fp32, prefix caching off, no flowopt cache;
2. ``+ semantic cache``: the same server, flowopt's cache in front;
3. ``+ prefix caching``: vLLM's default profile (prefix caching on), cache in front;
4. ``+ quantized``: llama.cpp on the 4-bit GGUF, cache in front (llama.cpp's single slot
   reuses the previous prompt's common prefix, so for this sequential traffic it keeps a
   form of the previous lever; concurrent requests would not share it);
5. ``+ speculative``: vLLM with prefix caching and n-gram speculation, cache in front.

Every configuration gets the same prompts (the packaged FAQ workload, Zipf popularity over
intents, paraphrases; a long static system prompt in front of each question), greedy,
sequential. Reported: p50/p99 latency, backend tokens per call, relative cost (server
seconds spent per call: the sum of the backend calls' latencies, cache hits cost nothing)
and quality (share of answers equal to the baseline's answer to the same question, and
their token-overlap F1 with it), as ratios to the baseline. Results in docs/serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flowopt import pipeline
from flowopt.bench.workload import faq_workload
from flowopt.local.llamacpp import LlamaCppConfig, LlamaCppServer
from flowopt.local.models import resolve_model
from flowopt.local.server import LocalServer, ServerConfig

SYSTEM = (
    "You are the support assistant of an online shop. Answer the customer's question in "
    "one or two short sentences. Be polite and precise. If you do not know, say so. "
) * 12  # ~450 tokens of static instructions: what prefix caching can reuse


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server(engine: str, profile: str, home: Path) -> Iterator[str]:
    port = _port()
    if engine == "llamacpp":
        lserver = LlamaCppServer(port, home=home)
        state = lserver.start(LlamaCppConfig(model="smollm2", port=port), timeout=300)
        try:
            yield state.base_url
        finally:
            lserver.stop()
        return
    server = LocalServer(port, home=home)
    state = server.start(
        ServerConfig(
            model=str(resolve_model("smollm2")),
            port=port,
            served_name="smollm2",
            settings_from="smollm2",
            profile=profile,
        ),
        timeout=600,
    )
    try:
        yield state.base_url
    finally:
        server.stop()


async def _run(base_url: str, engine: str, cache: bool, questions: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"base_url": base_url, "model": "smollm2", "timeout": 300}
    if engine == "llamacpp":
        opts["engine"] = "llamacpp"
    pipe = pipeline(
        "levers",
        backend={"vllm": opts},
        middleware=[{"cache": {"store": "memory"}}] if cache else [],
        defaults={"temperature": 0, "max_tokens": 48},
        steps=[{"name": "answer", "system": SYSTEM, "prompt": "{input}"}],
    )
    latencies: list[float] = []
    server_s = 0.0
    tokens = 0
    answers: list[str] = []
    try:
        # warm-up (embedder load, connections), with a question the workload never asks
        await pipe.ainvoke("Warm-up: are you there?")
        for q in questions:
            t0 = time.perf_counter()
            result = await pipe.ainvoke(q)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            answers.append(result.text.strip())
            for hop in result.hops:
                r = hop.response
                if not r.cached:
                    server_s += (r.latency_ms or 0.0) / 1000.0
                    tokens += r.usage.input_tokens + r.usage.output_tokens
    finally:
        await pipe.aclose()
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "tokens_per_call": tokens / len(questions),
        "server_s_per_call": server_s / len(questions),
        "answers": answers,
    }


def _f1(a: str, b: str) -> float:
    """Token-overlap F1 of two answers (SQuAD-style): a graded "same answer" that does not
    drop to 0 when an engine's arithmetic changes one word."""
    ta, tb = a.lower().split(), b.lower().split()
    if not ta or not tb:
        return float(ta == tb)
    common = sum(min(ta.count(w), tb.count(w)) for w in set(ta))
    if common == 0:
        return 0.0
    p, r = common / len(ta), common / len(tb)
    return 2 * p * r / (p + r)


CONFIGS = (
    ("baseline", "vllm", "no-prefix-cache", False),
    ("+ semantic cache", "vllm", "no-prefix-cache", True),
    ("+ prefix caching", "vllm", "default", True),
    ("+ quantized (llama.cpp; no prefix cache)", "llamacpp", "default", True),
    ("+ speculative (vLLM ngram + prefix caching)", "vllm", "ngram", True),
)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    questions = [p.text for p in faq_workload(seed=7).take(args.requests)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        started: dict[tuple[str, str], list[tuple[str, bool]]] = {}
        for label, engine, profile, cache in CONFIGS:
            started.setdefault((engine, profile), []).append((label, cache))
        results: dict[str, dict[str, Any]] = {}
        for (engine, profile), runs in started.items():
            with _server(engine, profile, Path(tmp) / f"{engine}-{profile}") as url:
                for label, cache in runs:
                    print(f"[levers] {label} ...", flush=True)
                    results[label] = await _run(url, engine, cache, questions)
    base = results["baseline"]
    for label, *_ in CONFIGS:
        r = results[label]
        pairs = list(zip(r["answers"], base["answers"], strict=True))
        same = sum(a == b for a, b in pairs)
        f1 = statistics.mean(_f1(a, b) for a, b in pairs)
        rows.append(
            {
                "config": label,
                "p50_ms": round(r["p50_ms"], 1),
                "p99_ms": round(r["p99_ms"], 1),
                "tokens_per_call": round(r["tokens_per_call"], 1),
                "relative_cost": round(r["server_s_per_call"] / base["server_s_per_call"], 3),
                "same_answer_as_baseline": round(same / len(questions), 3),
                "answer_f1_vs_baseline": round(f1, 3),
                "p50_ratio": round(r["p50_ms"] / base["p50_ms"], 3),
                "p99_ratio": round(r["p99_ms"] / base["p99_ms"], 3),
            }
        )
    return {"requests": len(questions), "model": "smollm2", "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = asyncio.run(main_async(args))
    for row in out["rows"]:
        print(
            f"{row['config']:46} p50 {row['p50_ms']:8.1f} ms ({row['p50_ratio']:.2f}x)  "
            f"p99 {row['p99_ms']:8.1f} ms ({row['p99_ratio']:.2f}x)  "
            f"tokens/call {row['tokens_per_call']:6.1f}  cost {row['relative_cost']:.2f}  "
            f"same answer {row['same_answer_as_baseline']:.2f}  "
            f"F1 vs baseline {row['answer_f1_vs_baseline']:.2f}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
