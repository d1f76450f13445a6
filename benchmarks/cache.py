#!/usr/bin/env python
"""Benchmark of the semantic cache: micro latencies and an end-to-end FAQ replay.

    python benchmarks/cache.py [--vllm-url http://127.0.0.1:8011] [--model smollm2]
                               [--requests 200] [--concurrency 8] [--json out.json]
                               [--embedder-runtime auto|onnx|torch] [--skip-e2e]

Micro (in process, no server): exact-hit latency through the middleware stack, semantic
lookup including the MiniLM embedding and the verifier, the latency a miss adds (lookup +
store) over calling the backend directly, and time to first chunk of a streamed hit; for
the in-memory and the embedded GPTCache store.

End to end (real vLLM server): FAQ-shaped traffic, Zipf-distributed over question groups
taken from the dev pairs file (``duplicate: 1`` pairs give a question and a paraphrase),
replayed through a real pipeline without and then with the cache, in one run: mean and
p95 latency, backend tokens, hit rate, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from flowopt.cache import CacheMiddleware, MemoryStore  # noqa: E402
from flowopt.cache.embedder import MiniLMEmbedder  # noqa: E402
from flowopt.cache.evaluation import load_pairs  # noqa: E402
from flowopt.cache.keys import cache_key  # noqa: E402
from flowopt.cache.stores.gptcache import GPTCacheStore  # noqa: E402
from flowopt.cache.verifier import LearnedVerifier  # noqa: E402
from flowopt.middleware.base import PipelineContext, build_stack  # noqa: E402
from flowopt.testing.fakes import FakeBackend  # noqa: E402
from flowopt.types import Request, Response  # noqa: E402

G = {"temperature": 0.0}


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary(xs: list[float], unit: str = "ms") -> dict[str, float | str]:
    return {
        "p50": round(pct(xs, 0.5), 4),
        "p95": round(pct(xs, 0.95), 4),
        "mean": round(statistics.fmean(xs), 4),
        "n": len(xs),
        "unit": unit,
    }


async def micro(
    store_name: str,
    pairs: list[dict[str, Any]],
    embedder: MiniLMEmbedder,
    verifier: LearnedVerifier,
    tmp: Path,
) -> dict[str, Any]:
    embedder.forget()  # every store run embeds its questions cold
    backend = FakeBackend()
    store: Any = MemoryStore() if store_name == "memory" else GPTCacheStore(tmp / store_name)
    mw = CacheMiddleware(store=store, embedder=embedder, verifier=verifier)
    await mw.setup(PipelineContext("bench", backend))
    handler = build_stack([("cache", mw)], backend.generate, traced=False)
    out: dict[str, Any] = {"store": store_name}

    # Misses: the cache's lookup + store over the bare backend call (fresh texts).
    dups = [p for p in pairs if p["duplicate"] == 1][:400]
    bare, missed = [], []
    for p in dups[:200]:
        req = Request.chat(p["a"] + " (bare)", params=G, tenant="bench")
        t0 = time.perf_counter()
        await backend.generate(req)
        bare.append((time.perf_counter() - t0) * 1000)
        req = Request.chat(p["a"], params=G, tenant="bench")
        t0 = time.perf_counter()
        await handler(req)
        missed.append((time.perf_counter() - t0) * 1000)
    out["miss_added_ms"] = summary([m - statistics.median(bare) for m in missed])

    # Exact hits through the middleware stack (in-process, no tracing).
    exact = []
    reqs = [Request.chat(p["a"], params=G, tenant="bench") for p in dups[:200]]
    for _ in range(5):
        for req in reqs:
            t0 = time.perf_counter()
            r = await handler(req)
            exact.append((time.perf_counter() - t0) * 1e6)
            assert r.cached
    out["exact_hit_us"] = summary(exact, "us")

    # Semantic lookups, embedding included (paraphrases never embedded before).
    engine = mw.engine
    assert engine is not None and mw.model_identity is not None
    sem, served = [], 0
    for p in dups[:200]:
        key = cache_key(
            Request.chat(p["b"], params=G, tenant="bench"), model_identity=mw.model_identity
        )
        t0 = time.perf_counter()
        res = engine.lookup(key)
        sem.append((time.perf_counter() - t0) * 1000)
        served += res.tier == "semantic"
    out["semantic_lookup_ms"] = summary(sem)
    out["semantic_served"] = served

    # Time to first chunk of a streamed hit, measured from the call.
    ttft = []
    for p in dups[:200]:
        req = Request.chat(p["a"], params=G, tenant="bench", stream=True)
        t0 = time.perf_counter()
        r = await handler(req)
        assert r.stream is not None
        async for _ in r.stream:
            ttft.append((time.perf_counter() - t0) * 1000)
            break
        await r.stream.aclose()
    out["stream_hit_ttft_ms"] = summary(ttft)
    await mw.aclose()
    return out


async def faq_replay(
    url: str,
    model: str,
    pairs: list[dict[str, Any]],
    n: int,
    concurrency: int,
    embedder: MiniLMEmbedder,
    verifier: LearnedVerifier,
    max_tokens: int,
) -> dict[str, Any]:
    from flowopt import pipeline

    rng = random.Random(11)
    groups = [(p["a"], p["b"]) for p in pairs if p["duplicate"] == 1][:60]
    weights = [1.0 / (k + 1) ** 1.1 for k in range(len(groups))]
    traffic = []
    for _ in range(n):
        a, b = rng.choices(groups, weights)[0]
        traffic.append(a if rng.random() < 0.5 else b)

    async def run(with_cache: bool) -> dict[str, Any]:
        mws = [CacheMiddleware(store=MemoryStore(), embedder=embedder, verifier=verifier)]
        pipe = pipeline(
            "faq-bench",
            backend={"vllm": {"base_url": url, "model": model}},
            middleware=mws if with_cache else [],
            steps=[
                {
                    "name": "answer",
                    "system": "Answer in one short sentence.",
                    "prompt": "{input}",
                    "params": {"temperature": 0.0, "max_tokens": max_tokens},
                }
            ],
        )
        await pipe.start()
        gate = asyncio.Semaphore(concurrency)
        lat: list[float] = []
        tokens = 0
        hits = 0
        cut: list[bool] = []

        async def one(q: str) -> None:
            nonlocal tokens, hits
            async with gate:
                t0 = time.perf_counter()
                res = await pipe.ainvoke(q, tenant="faq")
                lat.append((time.perf_counter() - t0) * 1000)
            resp: Response = res.hops[0].response
            tokens += resp.usage.input_tokens + resp.usage.output_tokens
            hits += int(resp.cached)
            cut.append(resp.finish_reason == "length")

        t0 = time.perf_counter()
        await asyncio.gather(*(one(q) for q in traffic))
        wall = time.perf_counter() - t0
        await pipe.aclose()
        return {
            "mean_ms": round(statistics.fmean(lat), 1),
            "p95_ms": round(pct(lat, 0.95), 1),
            "backend_tokens": tokens,
            "hit_rate": round(hits / len(traffic), 3),
            "truncated_answers": sum(cut),
            "wall_s": round(wall, 1),
        }

    without = await run(False)
    with_cache = await run(True)
    return {
        "requests": n,
        "concurrency": concurrency,
        "groups": len(groups),
        "max_tokens": max_tokens,
        "without_cache": without,
        "with_cache": with_cache,
        "ratios": {
            "mean_latency": round(with_cache["mean_ms"] / without["mean_ms"], 3),
            "p95_latency": round(with_cache["p95_ms"] / without["p95_ms"], 3),
            "backend_tokens": round(
                with_cache["backend_tokens"] / max(1, without["backend_tokens"]), 3
            ),
        },
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument(
        "--pairs",
        type=Path,
        default=os.environ.get("FLOWOPT_QQP_PAIRS"),
        help="the QQP dev pairs file (default: $FLOWOPT_QQP_PAIRS; required)",
    )
    ap.add_argument(
        "--vllm-url", default=os.environ.get("FLOWOPT_VLLM_URL", "http://127.0.0.1:8011")
    )
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--embedder-runtime",
        choices=["auto", "onnx", "torch"],
        default="auto",
        help="MiniLM runtime (auto: onnx when onnxruntime is installed)",
    )
    args = ap.parse_args()
    if args.pairs is None:
        ap.error(
            "pass --pairs PATH (the QQP dev pairs file, qqp-pairs-dev.jsonl: 20,000 labelled "
            "pairs, not in this repository) or set FLOWOPT_QQP_PAIRS; "
            "tests/data/qqp-sample.jsonl holds only 100 of them, enough for tests, not here"
        )

    pairs = load_pairs(args.pairs)
    embedder = MiniLMEmbedder(runtime=args.embedder_runtime)
    embedder.load()
    embedder.embed("warm-up")
    verifier = LearnedVerifier()
    report: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "embedder_runtime": embedder.runtime,
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["micro"] = [
            await micro(name, pairs, embedder, verifier, Path(tmp))
            for name in ("memory", "gptcache")
        ]
    if not args.skip_e2e:
        report["faq_replay"] = await faq_replay(
            args.vllm_url,
            args.model,
            pairs,
            args.requests,
            args.concurrency,
            embedder,
            verifier,
            args.max_tokens,
        )
    report["load_avg_after"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
