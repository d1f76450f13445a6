"""Prompt compression on a RAG prompt: only when it pays, and never past the window.

    flowopt backend up --model smollm2      # 127.0.0.1:8000, a 2,048-token window
    python examples/compress_rag.py

Uses one NQ question with its 20 Wikipedia passages (tests/data/nq20-sample.jsonl). The
passages are marked compressible (``flowopt.compress.mark``); the system prompt and the
question are not, and reach the server byte for byte. Shows:

1. eight passages (~1,100 tokens, fits): the "only when it pays" decision, its reason and
   the predicted saving (on a CPU server the compressor costs about what it saves);
2. all twenty passages (~3,300 tokens: over SmolLM2's 2,048-token window): compressed to
   fit instead of failing, with the ratio, and whether the gold answer survived;
3. the same with ``overflow: error``: a typed error that says by how much it is over.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from flowopt import pipeline
from flowopt.compress import Compress, PromptTooLongError
from flowopt.compress.evaluate import build_request

BASE_URL = os.environ.get("FLOWOPT_BASE_URL", "http://127.0.0.1:8000")
MODEL = os.environ.get("FLOWOPT_MODEL", "smollm2")
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "nq20-sample.jsonl"
STEPS = [{"name": "answer", "prompt": "{input}"}]


def decision(resp: object) -> dict[str, object]:
    (d,) = [d for d in resp.decisions if d.middleware == "compress"]  # type: ignore[attr-defined]
    return {"action": d.action, **d.detail}


async def main() -> None:
    row = json.loads(DATA.read_text().splitlines()[6])  # gold passage at position 4
    answers = row["answers"]
    backend = {"vllm": {"base_url": BASE_URL, "model": MODEL}}

    rag = pipeline("rag", backend=backend, steps=STEPS, middleware=[Compress(ratio=3.0)])
    short = dict(row, ctxs=row["ctxs"][:8])
    req, _, _ = build_request(short)
    resp = await rag.acall(req)
    d = decision(resp)
    print(f"8 passages: {d['action']} ({d['reason']}), {d['tokens_before']} marked tokens,")
    print(f"  predicted saving {d['predicted_saving_ms']} ms at {d['prefill_tps']} prefill tok/s")
    print(f"  answer: {resp.text.strip()[:80]!r}")

    req, _, _ = build_request(row)
    resp = await rag.acall(req)
    d = decision(resp)
    assert d["action"] == "compressed" and d["reason"] == "fit", d
    print(
        f"20 passages: over the window, compressed to fit: {d['tokens_before']} -> "
        f"{d['tokens_after']} tokens ({d['ratio']}x, {d['compress_ms']} ms)"
    )
    print(f"  answer: {resp.text.strip()[:80]!r} (gold: {answers})")
    await rag.aclose()

    strict = pipeline(
        "rag-strict", backend=backend, steps=STEPS, middleware=[Compress(overflow="error")]
    )
    try:
        await strict.acall(req)
        raise SystemExit("expected PromptTooLongError")
    except PromptTooLongError as exc:
        print(f"overflow: error -> {type(exc).__name__}: over by {exc.over_by} tokens")
    await strict.aclose()


if __name__ == "__main__":
    asyncio.run(main())
