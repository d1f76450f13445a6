"""Resilience and cascade benchmark against a real OpenAI-compatible server.

    python benchmarks/resilience.py --base-url http://127.0.0.1:8011 --model smollm2 \
        --out docs/results/resilience.json

Three parts, each reported as ratios against a baseline measured in the same run (absolute
numbers on a shared CPU mean little; ratios do):

1. faults: goodput (share of requests answered completely) and p50/p99 latency with 0%,
   5% and 20% of requests given an injected fault (503, 429 + Retry-After, reset, stream
   cut) by the fault proxy — bare backend vs. the ``resilience`` layer.
2. shedding: closed-loop clients at 1x and 2x the concurrency the server is given
   (``--saturation``). Without shedding vs. ``shed`` (max_concurrency = saturation,
   queue 0): p99 of admitted requests vs. the 1x p99, and how fast a shed request is told.
3. cascade: prompts from ``--data`` (default: the 240-row routing sample committed in
   ``tests/data``; pass the full routing-dev.jsonl for more) through ``cascade`` (two price
   tiers) at several thresholds: share answered by the cheap tier, cost / always-strong cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import flowopt
from flowopt.errors import FlowoptError, RejectedError
from flowopt.testing.faultproxy import Fault, FaultProxy
from flowopt.types import Params, Request

ROOT = Path(__file__).resolve().parent.parent
PRICES = [
    {
        "name": "cheap",
        "backend": "default",
        "price": {"input_per_1k": 0.0002, "output_per_1k": 0.0002},
    },
    {
        "name": "strong",
        "backend": "strong",
        "price": {"input_per_1k": 0.003, "output_per_1k": 0.006},
    },
]


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def make(url: str | list[str], model: str, middleware: list[Any], strong: str | None = None) -> Any:
    opts: dict[str, Any] = {"model": model, "timeout": 60}
    opts["base_urls" if isinstance(url, list) else "base_url"] = url
    backends = {"strong": {"vllm": {"base_url": strong, "model": model}}} if strong else {}
    return flowopt.pipeline(
        "bench",
        backend={"vllm": opts},
        backends=backends,
        middleware=middleware,
        steps=[{"name": "a", "prompt": "{input}"}],
    )


async def batch(pipe: Any, n: int, conc: int, max_tokens: int) -> tuple[int, list[float], float]:
    """``n`` requests, ``conc`` at a time, every other one streamed; answered, latencies."""
    sem = asyncio.Semaphore(conc)
    lat: list[float] = []

    async def one(i: int) -> bool:
        async with sem:
            t = time.perf_counter()
            try:
                r = await pipe.acall(
                    Request.chat(
                        f"Write one short sentence about the number {i}.",
                        stream=i % 2 == 0,
                        params=Params(max_tokens=max_tokens, temperature=0),
                    )
                )
                await r.complete()
            except FlowoptError:
                return False
            lat.append(time.perf_counter() - t)
            return True

    t0 = time.perf_counter()
    oks = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(oks), lat, time.perf_counter() - t0


async def faults_part(base: str, model: str, n: int, conc: int, max_tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    faults = [
        Fault.status(503),
        Fault.status(429, retry_after=0.2),
        Fault.reset(),
        Fault.cut(after_events=2),
    ]
    for label, mw in (
        ("bare", []),
        (
            "resilience",
            [
                {
                    "resilience": {
                        "retry": {"attempts": 3, "seed": 1, "budget": {"ratio": 0.2}},
                        "breaker": {"failure_threshold": 50},
                    }
                }
            ],
        ),
    ):
        for rate in (0.0, 0.05, 0.20):
            async with FaultProxy(base) as proxy:
                proxy.set_random(rate, faults, seed=7)
                pipe = make(proxy.url, model, mw)
                ok, lat, wall = await batch(pipe, n, conc, max_tokens)
                await pipe.aclose()
                out[f"{label}@{int(rate * 100)}%"] = {
                    "goodput": ok / n,
                    "ok_per_s": ok / wall,
                    "p50_s": pct(lat, 0.5),
                    "p99_s": pct(lat, 0.99),
                    "upstream_requests": proxy.count(),
                }
            print(label, rate, out[f"{label}@{int(rate * 100)}%"], flush=True)
    for label in ("bare", "resilience"):
        b = out[f"{label}@0%"]
        for rate in (5, 20):
            r = out[f"{label}@{rate}%"]
            r["p50_vs_0pct"] = r["p50_s"] / b["p50_s"]
            r["p99_vs_0pct"] = r["p99_s"] / b["p99_s"]
    return out


async def closed_loop(pipe: Any, clients: int, seconds: float, max_tokens: int) -> dict[str, Any]:
    lat: list[float] = []
    shed_ms: list[float] = []
    stop = time.perf_counter() + seconds

    async def client(c: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            i += 1
            t = time.perf_counter()
            try:
                await pipe.acall(
                    Request.chat(
                        f"Count to five, client {c} turn {i}.",
                        params=Params(max_tokens=max_tokens, temperature=0),
                    )
                )
                lat.append(time.perf_counter() - t)
            except RejectedError as exc:
                shed_ms.append((time.perf_counter() - t) * 1000)
                # the client honours the hint, as a well-behaved caller does
                await asyncio.sleep(min(exc.retry_after or 0.05, 0.5))

    await asyncio.gather(*(client(c) for c in range(clients)))
    return {
        "admitted": len(lat),
        "shed": len(shed_ms),
        "p50_s": pct(lat, 0.5),
        "p99_s": pct(lat, 0.99),
        "shed_reject_p99_ms": pct(shed_ms, 0.99) if shed_ms else None,
        "admitted_per_s": len(lat) / seconds,
    }


async def shed_part(
    base: str, model: str, sat: int, seconds: float, max_tokens: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["unloaded(1 client)"] = await closed_loop(make(base, model, []), 1, seconds / 2, max_tokens)
    print("unloaded", out["unloaded(1 client)"], flush=True)
    for label, mw in (
        ("no_shed", []),
        ("shed", [{"shed": {"max_concurrency": sat, "max_queue": 0}}]),
    ):
        for mult in (1, 2):
            pipe = make(base, model, mw)
            r = await closed_loop(pipe, sat * mult, seconds, max_tokens)
            await pipe.aclose()
            out[f"{label}@{mult}x"] = r
            print(label, mult, r, flush=True)
    base_p99 = out["no_shed@1x"]["p99_s"]
    for k in ("no_shed@2x", "shed@1x", "shed@2x"):
        out[k]["p99_vs_1x_p99"] = out[k]["p99_s"] / base_p99
    out["target"] = "shed@2x admitted p99 <= 1.5 x no_shed@1x p99; shed rejection <= 5 ms"
    out["target_met"] = bool(
        out["shed@2x"]["p99_vs_1x_p99"] <= 1.5 and (out["shed@2x"]["shed_reject_p99_ms"] or 0) <= 5
    )
    return out


async def cascade_part(
    base: str, model: str, data: Path, n: int, max_tokens: int
) -> dict[str, Any]:
    rows = [json.loads(line) for line in data.open()][:n]
    if len(rows) < n:
        raise SystemExit(f"{data} has {len(rows)} rows; --cascade-n asks for {n}")
    out: dict[str, Any] = {}
    for th in (0.0, 0.3, 0.5, 0.7, 1.0):
        pipe = make(base, model, [{"cascade": {"tiers": PRICES, "threshold": th}}], strong=base)
        cost = strongest = 0.0
        cheap = 0
        for r in rows:
            resp = await pipe.acall(
                Request.chat(
                    r["prompt"][:1500], params=Params(max_tokens=max_tokens, temperature=0)
                )
            )
            d = next(d for d in resp.decisions if d.middleware == "cascade")
            cost += resp.cost or 0.0
            strongest += d.detail["strongest_cost"]
            cheap += d.detail["tier"] == "cheap"
        await pipe.aclose()
        out[f"threshold={th}"] = {
            "cheap_share": cheap / len(rows),
            "cost_vs_always_strong": cost / strongest,
        }
        print("cascade", th, out[f"threshold={th}"], flush=True)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--base-url", default=os.environ.get("FLOWOPT_BASE_URL", "http://127.0.0.1:8000")
    )
    ap.add_argument("--model", default=None)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--saturation", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--cascade-n", type=int, default=24)
    ap.add_argument(
        "--data",
        default=str(ROOT / "tests" / "data" / "routing-sample.jsonl"),
        help="routing JSONL with a 'prompt' per line (default: the repo's 240-row sample)",
    )
    ap.add_argument("--parts", default="faults,shed,cascade")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    model = a.model
    if model is None:
        import httpx

        async with httpx.AsyncClient() as client:
            models = (await client.get(a.base_url.rstrip("/") + "/v1/models")).json()
        model = models["data"][0]["id"]
    parts = set(a.parts.split(","))
    res: dict[str, Any] = {"base_url": a.base_url, "model": model, "args": vars(a)}
    if "faults" in parts:
        res["faults"] = await faults_part(
            a.base_url, model, a.requests, a.concurrency, a.max_tokens
        )
    if "shed" in parts:
        res["shed"] = await shed_part(a.base_url, model, a.saturation, a.seconds, a.max_tokens)
    if "cascade" in parts:
        res["cascade"] = await cascade_part(
            a.base_url, model, Path(a.data), a.cascade_n, a.max_tokens
        )
    text = json.dumps(res, indent=2, default=str)
    if a.out:
        out = Path(a.out)
        await asyncio.to_thread(out.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(out.write_text, text)
    print(text)


if __name__ == "__main__":
    asyncio.run(main())
