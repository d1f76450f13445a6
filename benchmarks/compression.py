#!/usr/bin/env python
"""End-to-end latency with prompt compression off, always on, and "only when it pays".

    python benchmarks/compression.py --base-url http://127.0.0.1:8021 --model qwen0.5b
        [--lengths 1000,2000,3400] [--reps 2] [--ratio 3] [--data FILE] [--json out.json]

For each prompt length (tokens of retrieved passages, counted by the scorer's tokenizer) a
RAG prompt is built from NQ-20 passages (default: the sample in tests/data; pass the full
dev file with ``--data``), marked compressible, and sent through a ``compress`` middleware
over the real server: ``off`` (when: never), ``on`` (when: always) and ``auto`` (the
default decision, which learns the server's prefill speed from its own answers: it gets
three unmarked warm-up calls first, as a live pipeline would have had traffic). Each call
carries a unique first line, so no mode profits from another's prefix-cache entries. The
latency is the whole call (compression included), max_tokens 16, greedy. Printed as
medians and as ratios against ``off`` measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from flowopt.backends.vllm import VLLMBackend
from flowopt.compress import Compress, LLMLinguaScorer, mark
from flowopt.compress.evaluate import SYSTEM, _field, load_rows
from flowopt.middleware.base import build_stack, traced_backend
from flowopt.types import Message, Params, Request

ROOT = Path(__file__).resolve().parents[1]


def passages_of(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    out, questions = [], []
    for row in rows:
        questions.append(str(row["question"]))
        for c in _field(row, "ctxs"):
            out.append(f"(Title: {c.get('title', '')}) {c['text']}")
    return out, questions


def make_request(
    pool: list[str], question: str, tokens: int, scorer: LLMLinguaScorer, offset: int
) -> Request:
    chosen: list[str] = []
    total = 0
    i = offset
    while total < tokens:
        p = f"Document [{len(chosen) + 1}]{pool[i % len(pool)]}"
        chosen.append(p)
        total += scorer.count_tokens(p)
        i += 1
    body = "\n\n".join(chosen)
    nonce = uuid.uuid4().hex[:8]
    user = f"Request {nonce}.\nSearch results:\n\n{body}\n\nQuestion: {question}\nAnswer:"
    req = Request(
        messages=(Message("system", SYSTEM), Message("user", user)),
        params=Params(temperature=0.0, max_tokens=16),
    )
    return mark(req, chosen, question=question)


async def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8021")
    ap.add_argument("--model", default="qwen0.5b")
    ap.add_argument("--lengths", default="1000,2000,3400")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--ratio", type=float, default=3.0)
    ap.add_argument("--data", default=str(ROOT / "tests" / "data" / "nq20-sample.jsonl"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    scorer = LLMLinguaScorer()
    scorer.compressor()
    pool, questions = passages_of(load_rows(args.data, 40))
    backend = VLLMBackend(args.base_url, model=args.model)
    terminal = traced_backend(backend, name="vllm")
    mws = {
        "off": Compress(scorer=scorer, when="never", ratio=args.ratio),
        "on": Compress(scorer=scorer, when="always", ratio=args.ratio),
        "auto": Compress(scorer=scorer, ratio=args.ratio),
    }
    stacks = {k: build_stack([("compress", m)], terminal, traced=False) for k, m in mws.items()}
    for n in (500, 1500, 3000):  # auto's warm-up: unmarked traffic teaches it the server
        await stacks["auto"](make_request(pool, questions[0], n, scorer, n).replace(metadata={}))
    results: dict[str, Any] = {"model": args.model, "ratio": args.ratio, "lengths": []}
    k = 0
    for length in lengths:
        times: dict[str, list[float]] = {m: [] for m in mws}
        actions: dict[str, list[str]] = {m: [] for m in mws}
        for _rep in range(args.reps):
            for mode in ("off", "on", "auto"):
                k += 1
                req = make_request(pool, questions[k % len(questions)], length, scorer, 7 * k)
                scorer.clear_cache()  # no mode reuses scores another mode paid for
                started = time.perf_counter()
                resp = await stacks[mode](req)
                times[mode].append(time.perf_counter() - started)
                d = next(x for x in resp.decisions if x.middleware == "compress")
                actions[mode].append(f"{d.action}:{d.detail.get('reason', '')}")
        med = {m: statistics.median(v) for m, v in times.items()}
        row = {
            "length": length,
            "median_s": {m: round(v, 3) for m, v in med.items()},
            "vs_off": {m: round(med[m] / med["off"], 3) for m in med},
            "auto_actions": actions["auto"],
        }
        results["lengths"].append(row)
        print(
            f"{length:>6} tokens: off {med['off']:.2f}s  on {med['on']:.2f}s "
            f"({row['vs_off']['on']:.2f}x)  auto {med['auto']:.2f}s "
            f"({row['vs_off']['auto']:.2f}x)  auto did {actions['auto']}",
            flush=True,
        )
    auto = mws["auto"].prefill_model(Request.chat("x"))
    results["learned_prefill_tps"] = round(auto.prefill_tps, 1)
    results["compressor_ms_per_token"] = round(mws["on"].cost.seconds_per_token * 1000, 3)
    print(
        f"learned prefill {results['learned_prefill_tps']} tok/s; compressor "
        f"{results['compressor_ms_per_token']} ms/token"
    )
    await backend.aclose()
    return results


if __name__ == "__main__":
    out = asyncio.run(main())
    if "--json" in sys.argv:
        Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps(out, indent=1) + "\n")
