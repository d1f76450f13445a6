"""A support FAQ behind the semantic cache: paraphrases are served from the cache, near-miss
questions and other tenants are not, streamed hits replay chunk for chunk, and a burst of
identical questions reaches the engine once (single flight).

    FLOWOPT_BASE_URL=http://127.0.0.1:8000 python examples/cache_faq.py

Start a local server first with `flowopt backend up` (or point FLOWOPT_BASE_URL elsewhere).
The cache here lives in a temporary directory (the embedded GPTCache store); in production
leave ``path`` out (``~/.cache/flowopt/cache``) or use the shared Postgres/Redis tier.
"""

from __future__ import annotations

import asyncio
import os
import tempfile

from flowopt import Result, TokenEvent, pipeline


def cache_line(result: Result) -> str:
    d = next(d for d in result.hops[-1].response.decisions if d.middleware == "cache")
    detail = dict(d.detail)
    parts = [d.action]
    for key in ("tier", "verdict", "probability", "skip_reason"):
        if detail.get(key) is not None:
            parts.append(f"{key}={detail[key]}")
    return " ".join(parts)


async def main() -> None:
    base_url = os.environ.get("FLOWOPT_BASE_URL", "http://127.0.0.1:8000")
    model = os.environ.get("FLOWOPT_MODEL", "smollm2")
    with tempfile.TemporaryDirectory() as cache_dir:
        pipe = pipeline(
            "faq",
            backend={"vllm": {"base_url": base_url, "model": model}},
            middleware=[
                {
                    "cache": {
                        "store": "gptcache",
                        "store_options": {"path": cache_dir},
                        "ttl_s": 3600,
                    }
                }
            ],
            # Stop at the first sentence end so answers finish (a cut-off answer is never
            # stored: finish reason "length" is one of the skip rules).
            defaults={"temperature": 0, "max_tokens": 96, "stop": ["."]},
            steps=[{"name": "answer", "system": "Answer in one sentence.", "prompt": "{input}"}],
        )
        questions = [
            ("acme", "How do I reset my password?"),
            ("acme", "How do I reset my password?"),  # exact hit
            ("acme", "How can I reset my password?"),  # paraphrase: semantic hit
            ("acme", "How do I change my username?"),  # near miss: verifier says no
            ("globex", "How do I reset my password?"),  # another tenant: never shared
        ]
        for tenant, q in questions:
            r = await pipe.ainvoke(q, tenant=tenant)
            print(
                f"[{tenant}] {q}\n    -> {cache_line(r)}, {r.latency_ms:.0f} ms, "
                f"{r.usage.output_tokens} backend tokens: {r.text.strip()[:70]!r}"
            )

        # A streamed request replays the stored answer with the same chunks.
        for attempt in ("live", "replay"):
            chunks: list[str] = []
            final: Result | None = None
            async for ev in pipe.astream("What are your opening hours?", tenant="acme"):
                if isinstance(ev, TokenEvent):
                    chunks.append(ev.text)
                elif isinstance(ev, Result):
                    final = ev
            assert final is not None
            print(f"stream ({attempt}): {len(chunks)} chunks -> {cache_line(final)}")

        # Ten identical questions at once: one engine call, nine answers "coalesced".
        burst = await asyncio.gather(
            *(pipe.ainvoke("What is your refund policy?", tenant="acme") for _ in range(10))
        )
        actions = sorted(cache_line(r).split()[0] for r in burst)
        print(f"burst of 10: {actions.count('coalesced')} coalesced, {actions.count('miss')} miss")
        await pipe.aclose()


if __name__ == "__main__":
    asyncio.run(main())
