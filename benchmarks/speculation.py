#!/usr/bin/env python
"""Benchmark of workflow-level speculation on a two-step intent workflow.

    python benchmarks/speculation.py --data FILE [--json] [--limit 60] [--labels 8]
        [--train 160] [--url http://127.0.0.1:8011/v1] [--model smollm2]
        [--step1-url URL --step1-model NAME] [--max-tokens 40]
        [--threshold 0.5] [--cost-factor 1] [--max-waste 0.1] [--max-queued 0|none]
        [--warmup 20]

FILE is a ``{"split", "text", "intent"}`` JSONL (clinc150-dev.jsonl, banking77-dev.jsonl).
The workflow: step 1 (``classify``) picks one of ``--labels`` intents (the most frequent
ones in the file) or ``other`` with a structured ``choice`` through the real server;
step 2 (``answer``) answers with the handler prompt of that intent. Out-of-scope rows
(and rows of other intents) are included: the right step-1 answer for them is ``other``.

1. Past traffic: step 1 runs on ``--train`` train rows; a TF-IDF guesser is fitted on
   *step 1's outputs* (what the speculator must predict), not on the dataset labels; the
   first ``--warmup`` of those rows then run through the speculative pipeline, so the
   gate's online figures (T1, T2, calibration, waste ledger) start from past traffic as
   in a running deployment (the reported counters are the measured rows' only).
2. Measured rows (not among those): each runs without and with speculation, the order
   alternating per row, one run at a time, so both see the same server load.

Reported: guess hit rate (against step 1's real output), T1, T2 (medians of the plain
runs' hops), p50/p95 end to end with and without, the bound p*min(T1,T2)/(T1+T2), the
share realised (``bound_realised`` from the p50s, clipped to 0..1: a p50 can beat a bound
on the mean when most runs hit; ``bound_realised_mean`` from the mean latencies, which is
what the bound bounds), wasted tokens (share of step-2 tokens; the per-run ledger
``Result.speculation`` is summed and checked against the edge's figures), the gate's
decisions (speculated, skipped by threshold/value, waste budget, backend queue), and the
losslessness check (committed outputs compared with the plain run of the same input;
must be 0). ``--max-waste 1 --max-queued none`` turns the budget and the queue off.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import dataclasses
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

import flowopt  # noqa: E402
from flowopt.speculate import speculation_stats  # noqa: E402
from flowopt.speculate._tfidf import fit  # noqa: E402
from flowopt.speculate.gate import EdgeStats  # noqa: E402


def _rows(path: str, n_labels: int) -> tuple[list[dict[str, Any]], list[str]]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    counts = collections.Counter(r["intent"] for r in rows if not r.get("is_oos"))
    labels = sorted(lab for lab, _ in counts.most_common(n_labels))
    return rows, labels


def _steps(labels: list[str], max_tokens: int, step1_backend: str | None) -> list[dict[str, Any]]:
    choice = [*labels, "other"]
    listing = ", ".join(choice)
    classify: dict[str, Any] = {
        "name": "classify",
        "prompt": f"Classify the customer request as one of: {listing}.\nRequest: {{input}}\n"
        "Intent:",
        "params": {
            "temperature": 0,
            "max_tokens": 12,
            "extra": {"structured_outputs": {"choice": choice}},
        },
    }
    if step1_backend:
        classify["backend"] = step1_backend
    answer = {
        "name": "answer",
        "system": "You are the support handler for '{classify}' requests. Be brief.",
        "prompt": "{input}",
        "params": {"temperature": 0, "max_tokens": max_tokens},
    }
    return [classify, answer]


def _since(now: EdgeStats, then: EdgeStats) -> EdgeStats:
    """The edge's counters over the measured rows only (the warm-up's subtracted)."""
    out = copy.copy(now)
    for f in dataclasses.fields(EdgeStats):
        if f.name not in {"edge", "t1_ms", "t2_ms", "miss_share"}:  # counters, not EWMAs
            setattr(out, f.name, getattr(now, f.name) - getattr(then, f.name))
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--labels", type=int, default=8)
    ap.add_argument("--train", type=int, default=160)
    ap.add_argument("--url", default="http://127.0.0.1:8011/v1")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--step1-url", default=None)
    ap.add_argument("--step1-model", default=None)
    ap.add_argument("--max-tokens", type=int, default=40)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--cost-factor", type=float, default=1.0)
    ap.add_argument("--max-waste", type=float, default=0.1)
    ap.add_argument("--max-queued", default="0", help="an integer, or 'none' (not read)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--warmup",
        type=int,
        default=20,
        help="train rows run through the speculative pipeline before measuring, so the "
        "gate's online figures (hit rate, T1, T2, waste ledger) come from past traffic "
        "as in a running deployment; 0 measures a cold edge",
    )
    args = ap.parse_args()
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    rows, labels = _rows(args.data, args.labels)
    rng = random.Random(args.seed)
    label_set = set(labels)
    # half the rows of the chosen intents, half anything else (out of scope included)
    inside = [r for r in rows if r["intent"] in label_set]
    outside = [r for r in rows if r["intent"] not in label_set]
    rng.shuffle(inside)
    rng.shuffle(outside)
    pool = [r for pair in zip(inside, outside, strict=False) for r in pair]
    train_rows = [r for r in pool if r["split"] == "train"][: args.train]
    used = {id(r) for r in train_rows}
    held = [r for r in pool if id(r) not in used and r["split"] != "train"]
    held += [r for r in pool if id(r) not in used and r["split"] == "train"]
    held = held[: args.limit]

    backend = {"vllm": {"base_url": args.url, "model": args.model, "timeout": 300}}
    backends = {}
    if args.step1_url:
        backends["step1"] = {
            "vllm": {"base_url": args.step1_url, "model": args.step1_model, "timeout": 300}
        }
    steps = _steps(labels, args.max_tokens, "step1" if args.step1_url else None)
    recorder = flowopt.pipeline("record", backend=backend, backends=backends, steps=steps[:1])
    log(f"recording step 1 on {len(train_rows)} train rows ...")
    outs = await recorder.abatch([r["text"] for r in train_rows], concurrency=4)
    await recorder.aclose()
    texts = [r["text"] for r in train_rows]
    model_path = Path(tempfile.mkdtemp()) / "guesser.npz"
    fit(texts, [o.text for o in outs]).save(model_path)  # type: ignore[union-attr]

    plain = flowopt.pipeline("plain", backend=backend, backends=backends, steps=steps)
    spec = flowopt.pipeline(
        "spec",
        backend=backend,
        backends=backends,
        steps=steps,
        speculate=[
            {
                "from": "classify",
                "to": "answer",
                "guesser": {"tfidf": {"model": str(model_path)}},
                "threshold": args.threshold,
                "cost_factor": args.cost_factor,
                "max_waste": args.max_waste,
                "max_queued": None if args.max_queued == "none" else int(args.max_queued),
            }
        ],
    )
    if args.warmup:
        log(f"warming the edge on {args.warmup} train rows ...")
        for row in train_rows[: args.warmup]:
            await spec.ainvoke(row["text"])
    warm = copy.copy(speculation_stats(spec)["classify->answer"])
    lat_on: list[float] = []
    lat_off: list[float] = []
    t1: list[float] = []
    t2: list[float] = []
    diffs = 0
    ledger = 0  # wasted tokens summed over the results' speculation records
    step1: collections.Counter[str] = collections.Counter()
    for i, row in enumerate(held):
        order = [(plain, lat_off), (spec, lat_on)]
        if i % 2:
            order.reverse()
        results = {}
        for pipe, bucket in order:
            t0 = time.perf_counter()
            res = await pipe.ainvoke(row["text"])
            bucket.append((time.perf_counter() - t0) * 1000.0)
            results[pipe.name] = res
        off = results["plain"]
        t1.append(off.hops[0].response.latency_ms or 0.0)
        t2.append(off.hops[1].response.latency_ms or 0.0)
        diffs += results["spec"].outputs != off.outputs
        ledger += results["spec"].wasted.total_tokens
        step1[str(off.outputs["classify"])] += 1
        if not args.json and (i + 1) % 10 == 0:
            log(f"  {i + 1}/{len(held)}")
    await plain.aclose()
    await spec.aclose()
    lifetime = speculation_stats(spec)["classify->answer"]
    s = _since(lifetime, warm)
    T1, T2 = statistics.median(t1), statistics.median(t2)
    p = s.hit_rate
    # the bound at the share of runs that committed a guess (hits over all runs: a run the
    # gate did not speculate on cannot save anything)
    bound = (s.hits / max(1, s.runs)) * min(T1, T2) / (T1 + T2)
    p50_on, p50_off = _pct(lat_on, 0.5), _pct(lat_off, 0.5)
    speedup = 1 - p50_on / p50_off
    # the bound is on the expected (mean) saving; a p50 can beat it when most runs hit
    mean_speedup = 1 - statistics.fmean(lat_on) / statistics.fmean(lat_off)
    out = {
        "data": Path(args.data).name,
        "n": len(held),
        "labels": len(labels) + 1,
        "step1_model": args.step1_model or args.model,
        "step2_model": args.model,
        "hit_rate": round(p, 3),
        # how skewed step 1's outputs are (a guesser that always says the commonest
        # label would be right this often)
        "step1_top_share": round(step1.most_common(1)[0][1] / len(held), 3),
        "step1_distinct": len(step1),
        "speculated_share": round(s.speculated / max(1, s.runs), 3),
        "T1_ms": round(T1, 1),
        "T2_ms": round(T2, 1),
        "p50_off_ms": round(p50_off, 1),
        "p50_on_ms": round(p50_on, 1),
        "p95_off_ms": round(_pct(lat_off, 0.95), 1),
        "p95_on_ms": round(_pct(lat_on, 0.95), 1),
        "p50_speedup": round(speedup, 3),
        "bound": round(bound, 3),
        "bound_realised": round(max(0.0, min(1.0, speedup / bound)) if bound > 0 else 0.0, 3),
        "mean_speedup": round(mean_speedup, 3),
        "bound_realised_mean": round(mean_speedup / bound, 3) if bound > 0 else 0.0,
        "lossless_differences": diffs,
        "wasted_tokens_per_request": round(s.wasted_tokens / max(1, s.runs), 2),
        "wasted_token_share": round(s.wasted_tokens / max(1, s.b_tokens), 3),
        # what the waste ledger bounds: the edge's whole life, warm-up included
        "wasted_token_share_lifetime": round(lifetime.waste_share, 3),
        "wasted_in_results": ledger,
        "skipped": {
            "gate": s.skipped_gate,
            "budget": s.skipped_budget,
            "queue": s.skipped_queue,
            "shed": s.skipped_shed,
        },
        "queue_unknown": s.queue_unknown,
        "warmup": args.warmup,
        "gate": {
            "threshold": args.threshold,
            "cost_factor": args.cost_factor,
            "max_waste": args.max_waste,
            "max_queued": args.max_queued,
        },
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:28s} {v}")


if __name__ == "__main__":
    asyncio.run(main())
