"""One app process of the shared-tier test: a real pipeline whose cache uses Postgres
(pgvector) and Redis, asking the questions given on the command line. Prints one JSON
line per question: the cache decision and the answer."""

from __future__ import annotations

import asyncio
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


async def main() -> None:
    from flowopt import pipeline

    vllm_url, model, dsn, redis_url, tenant, *questions = sys.argv[1:]
    pipe = pipeline(
        "shared-tier",
        backend={"vllm": {"base_url": vllm_url, "model": model}},
        middleware=[
            {
                "cache": {
                    "store": "postgres",
                    "store_options": {"dsn": dsn},
                    "exact_store": "redis",
                    "exact_store_options": {"url": redis_url},
                }
            }
        ],
        steps=[
            {
                "name": "answer",
                "system": "Answer in one short sentence.",
                "prompt": "{input}",
                "params": {"temperature": 0.0, "max_tokens": 128},
            }
        ],
    )
    for q in questions:
        result = await pipe.ainvoke(q, tenant=tenant)
        (hop,) = result.hops
        (d,) = [d for d in hop.response.decisions if d.middleware == "cache"]
        print(json.dumps({"q": q, "text": result.text, **d.to_dict()}), flush=True)
    await pipe.aclose()


if __name__ == "__main__":
    asyncio.run(main())
