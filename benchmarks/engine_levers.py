"""The engine-side levers measured one at a time: prefix caching, n-gram speculation,
continuous batching (the rows ``benchmarks/levers.py`` cannot separate).

    python benchmarks/engine_levers.py [--out docs/results/engine-levers.json]

Starts one local SmolLM2-135M vLLM-CPU server per profile, one after the other
(``no-prefix-cache``, ``default``, ``ngram``), and talks to it directly with the official
``openai`` client (no flowopt middleware: these are the engine's own figures):

- **prefix caching**: sequential streamed requests that share a ~1,000-token system prompt
  and differ in the question; time to first token (TTFT) and the prompt tokens the server
  reports as cached, ``no-prefix-cache`` vs ``default``.
- **n-gram speculation** (prompt lookup, no draft model): decode speed (completion tokens per
  second after the first token) on *extractive* prompts (copy a passage out of the prompt)
  and *free-form* prompts (write new text), single stream and 16 concurrent, ``default`` vs
  ``ngram``; greedy outputs compared text for text.
- **continuous batching**: the same N short requests sent one at a time and all at once,
  on ``default``: total time and output tokens per second.

Every figure is printed as a ratio to its baseline from the same run. The machine's load
moves absolute numbers; read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from levers import _server  # type: ignore[import-not-found]
from openai import AsyncOpenAI

LONG_SYSTEM = (
    "You are the support assistant of an online shop that sells kitchen appliances, garden "
    "tools and small electronics. Answer in one short sentence. Returns are accepted within "
    "30 days with the receipt; refunds go back to the original payment method within 5 "
    "business days. Shipping is free above 50 euros, otherwise 4.90 euros. "
) * 12

QUESTIONS = [
    "Can I return a kettle after three weeks?",
    "How much is shipping for a 20 euro order?",
    "When will my refund arrive?",
    "Do you sell garden hoses?",
    "Is shipping free for a 60 euro order?",
    "Can I get a refund in cash?",
    "What if I lost my receipt?",
    "How long do I have to return a toaster?",
    "Do you ship abroad?",
    "Can I exchange a blender for another colour?",
    "Is there a fee for returns?",
    "How do I track my parcel?",
]

PASSAGE = (
    "The lighthouse at Cape Morrow was built in 1871 from granite quarried on the island. "
    "Its lamp was first fuelled by whale oil, then by kerosene, and was electrified in 1923. "
    "The keeper's cottage, a low stone house with a slate roof, still stands at the foot of "
    "the tower. Visitors can climb the 142 steps to the gallery between May and September. "
    "On clear days the coast of the mainland is visible forty kilometres to the east."
)
EXTRACTIVE = [
    f"Passage:\n{PASSAGE}\n\nCopy the passage above exactly, word for word.",
    f"Passage:\n{PASSAGE}\n\nRepeat the last three sentences of the passage verbatim.",
    f"Passage:\n{PASSAGE}\n\nQuote the sentences about the lamp and the cottage exactly.",
    f"Passage:\n{PASSAGE}\n\nRewrite the passage unchanged, keeping every word.",
]
FREE_FORM = [
    "Write a short story about a fox who learns to swim.",
    "Describe your ideal weekend in a few sentences.",
    "Invent a recipe for a soup made from autumn vegetables.",
    "Write a letter to a friend about a trip to the mountains.",
]


async def _stream(
    client: AsyncOpenAI, messages: list[dict[str, str]], max_tokens: int
) -> dict[str, Any]:
    t0 = time.perf_counter()
    ttft: float | None = None
    text: list[str] = []
    usage: Any = None
    stream = await client.chat.completions.create(
        model="smollm2",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if ttft is None:
                ttft = time.perf_counter() - t0
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    total = time.perf_counter() - t0
    out = int(usage.completion_tokens) if usage else 0
    cached = 0
    if usage is not None and usage.prompt_tokens_details is not None:
        cached = int(usage.prompt_tokens_details.cached_tokens or 0)
    ttft = total if ttft is None else ttft
    decode_s = max(total - ttft, 1e-6)
    return {
        "ttft_s": ttft,
        "total_s": total,
        "completion_tokens": out,
        "prompt_tokens": int(usage.prompt_tokens) if usage else 0,
        "cached_tokens": cached,
        "decode_tok_s": (out - 1) / decode_s if out > 1 else 0.0,
        "text": "".join(text),
    }


def _user(q: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}]


async def _prefix(client: AsyncOpenAI, n: int) -> dict[str, Any]:
    runs = []
    for q in (QUESTIONS * 4)[:n]:
        msgs = [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": q}]
        runs.append(await _stream(client, msgs, 8))
    rest = runs[1:]  # the first request fills the cache on every profile
    return {
        "requests": len(runs),
        "prompt_tokens": rest[0]["prompt_tokens"],
        "ttft_p50_s": statistics.median(r["ttft_s"] for r in rest),
        "cached_tokens_mean": statistics.mean(r["cached_tokens"] for r in rest),
    }


async def _decode(
    client: AsyncOpenAI, prompts: list[str], concurrent: int, max_tokens: int
) -> dict[str, Any]:
    if concurrent == 1:
        runs = [await _stream(client, _user(p), max_tokens) for p in prompts]
        wall = sum(r["total_s"] for r in runs)
    else:
        batch = [prompts[i % len(prompts)] for i in range(concurrent)]
        t0 = time.perf_counter()
        runs = await asyncio.gather(*(_stream(client, _user(p), max_tokens) for p in batch))
        wall = time.perf_counter() - t0
    tokens = sum(r["completion_tokens"] for r in runs)
    return {
        "requests": len(runs),
        "decode_tok_s_per_stream": statistics.median(r["decode_tok_s"] for r in runs),
        "output_tok_s": tokens / wall,
        "texts": [r["text"] for r in runs],
    }


async def _batching(client: AsyncOpenAI, n: int) -> dict[str, Any]:
    prompts = [f"Name one fruit that starts with the letter {chr(65 + i % 26)}." for i in range(n)]
    t0 = time.perf_counter()
    seq = [await _stream(client, _user(p), 24) for p in prompts]
    seq_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    par = await asyncio.gather(*(_stream(client, _user(p), 24) for p in prompts))
    par_s = time.perf_counter() - t0
    return {
        "requests": n,
        "sequential_s": seq_s,
        "concurrent_s": par_s,
        "sequential_tok_s": sum(r["completion_tokens"] for r in seq) / seq_s,
        "concurrent_tok_s": sum(r["completion_tokens"] for r in par) / par_s,
        "speedup": seq_s / par_s,
    }


async def _measure(url: str, profile: str, args: argparse.Namespace) -> dict[str, Any]:
    base = url.rstrip("/")
    base = base if base.endswith("/v1") else base + "/v1"
    client = AsyncOpenAI(base_url=base, api_key="unused", timeout=600)
    try:
        await _stream(client, _user("Warm-up: say hello."), 4)
        out: dict[str, Any] = {}
        if profile in ("no-prefix-cache", "default"):
            out["prefix"] = await _prefix(client, args.prefix_requests)
        if profile in ("default", "ngram"):
            for kind, prompts in (("extractive", EXTRACTIVE), ("free_form", FREE_FORM)):
                out[f"{kind}_single"] = await _decode(client, prompts, 1, args.max_tokens)
                out[f"{kind}_c16"] = await _decode(client, prompts, 16, args.max_tokens)
        if profile == "default":
            out["batching"] = await _batching(client, args.batch_requests)
        return out
    finally:
        await client.close()


def _report(res: dict[str, dict[str, Any]]) -> dict[str, Any]:
    off, on = res["no-prefix-cache"]["prefix"], res["default"]["prefix"]
    report: dict[str, Any] = {
        "load_avg_1m_at_start": res["load"],
        "prefix_caching": {
            "prompt_tokens": on["prompt_tokens"],
            "ttft_p50_off_s": round(off["ttft_p50_s"], 3),
            "ttft_p50_on_s": round(on["ttft_p50_s"], 3),
            "ttft_ratio_on_vs_off": round(on["ttft_p50_s"] / off["ttft_p50_s"], 3),
            "cached_tokens_mean_off": off["cached_tokens_mean"],
            "cached_tokens_mean_on": on["cached_tokens_mean"],
        },
        "ngram": {},
        "continuous_batching": {
            k: round(v, 3) if isinstance(v, float) else v
            for k, v in res["default"]["batching"].items()
        },
    }
    for key in ("extractive_single", "extractive_c16", "free_form_single", "free_form_c16"):
        base, spec = res["default"][key], res["ngram"][key]
        same = sum(a == b for a, b in zip(base["texts"], spec["texts"], strict=True))
        report["ngram"][key] = {
            "decode_tok_s_per_stream_default": round(base["decode_tok_s_per_stream"], 2),
            "decode_tok_s_per_stream_ngram": round(spec["decode_tok_s_per_stream"], 2),
            "per_stream_ratio": round(
                spec["decode_tok_s_per_stream"] / base["decode_tok_s_per_stream"], 3
            ),
            "output_tok_s_ratio": round(spec["output_tok_s"] / base["output_tok_s"], 3),
            "identical_greedy_outputs": f"{same}/{len(base['texts'])}",
        }
    return report


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"load": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        for profile in ("no-prefix-cache", "default", "ngram"):
            print(f"[engine-levers] profile {profile} ...", flush=True)
            with _server("vllm", profile, Path(tmp) / profile) as url:
                res[profile] = await _measure(url, profile, args)
    return _report(res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefix-requests", type=int, default=13)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--batch-requests", type=int, default=32)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    report = asyncio.run(main_async(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
