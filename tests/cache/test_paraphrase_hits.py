"""The shipped verifier with the real encoder and vLLM server: a plain paraphrase of a
stored statement is served at the ``lenient`` point, and the same sentence with one fact
changed (a name, a code identifier, a number) is served at no named point.

Measured with the shipped weights: the paraphrase scores ~0.93, under the ``default``
threshold (~0.975), which is why the test names ``lenient`` (docs/cache.md, "Operating
points": the default serves about a third of held-out plain paraphrases).

The texts are written for this test (not taken from the dev files), so they are unseen by
the training script.
"""

from __future__ import annotations

from typing import Any

import pytest

from flowopt import pipeline
from flowopt.cache import CacheMiddleware, MemoryStore
from flowopt.result import Result

pytestmark = pytest.mark.integration

GREEDY = {"temperature": 0.0, "max_tokens": 200}  # a truncated answer is never stored
STORED = "Explain what the Redis `EXPIRE` command does to a key after 30 seconds."
PARAPHRASE = "Describe what Redis's `EXPIRE` command does to a key once 30 seconds have passed."
CHANGED = {
    "name": "Explain what the Memcached `EXPIRE` command does to a key after 30 seconds.",
    "identifier": "Explain what the Redis `PERSIST` command does to a key after 30 seconds.",
    "number": "Explain what the Redis `EXPIRE` command does to a key after 90 seconds.",
}


def decision(result: Result) -> dict[str, Any]:
    (hop,) = result.hops
    (d,) = [d for d in hop.response.decisions if d.middleware == "cache"]
    return d.to_dict()


@pytest.mark.parametrize("point", ["lenient", "default", "strict"])
async def test_paraphrase_hits_and_fact_changes_miss(
    vllm_url: str, served_model: str, minilm: Any, point: str
) -> None:
    cache = CacheMiddleware(store=MemoryStore(), embedder=minilm, operating_point=point)
    pipe = pipeline(
        "faq",
        backend={"vllm": {"base_url": vllm_url, "model": served_model}},
        middleware=[cache],
        steps=[
            {
                "name": "answer",
                "system": "Answer in one short sentence.",
                "prompt": "{input}",
                "params": GREEDY,
            }
        ],
    )
    first = await pipe.ainvoke(STORED, tenant="acme")
    assert decision(first)["action"] == "miss" and decision(first)["stored"], decision(first)

    para = await pipe.ainvoke(PARAPHRASE, tenant="acme")
    d = decision(para)
    if point == "lenient":
        assert (d["action"], d["tier"], d["verdict"]) == ("hit", "semantic", "accepted"), d
        assert para.text == first.text and para.usage.output_tokens == 0

    for kind, text in CHANGED.items():
        res = await pipe.ainvoke(text, tenant="acme")
        d = decision(res)
        assert d["action"] == "miss", (kind, d)
        assert res.usage.output_tokens > 0  # the backend answered
    await pipe.aclose()
