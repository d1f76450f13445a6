"""The default operating point with the real encoder, verifier and vLLM server: a plain
paraphrase of a stored statement is served, and the same sentence with one fact changed (a
name, a code identifier, a number, a negation) is not.

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

GREEDY = {"temperature": 0.0, "max_tokens": 16}
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


async def test_paraphrase_hits_and_fact_changes_miss(
    vllm_url: str, served_model: str, minilm: Any
) -> None:
    # The verifier is the shipped default: no threshold or operating point given.
    cache = CacheMiddleware(store=MemoryStore(), embedder=minilm)
    pipe = pipeline(
        "faq",
        backend={"vllm": {"base_url": vllm_url, "model": served_model}},
        middleware=[cache],
        steps=[{"name": "answer", "prompt": "{input}", "params": GREEDY}],
    )
    first = await pipe.ainvoke(STORED, tenant="acme")
    assert decision(first)["action"] == "miss" and decision(first)["stored"]

    para = await pipe.ainvoke(PARAPHRASE, tenant="acme")
    d = decision(para)
    assert (d["action"], d["tier"], d["verdict"]) == ("hit", "semantic", "accepted"), d
    assert para.text == first.text and para.usage.output_tokens == 0

    for kind, text in CHANGED.items():
        res = await pipe.ainvoke(text, tenant="acme")
        d = decision(res)
        assert d["action"] == "miss", (kind, d)
        assert res.usage.output_tokens > 0  # the backend answered
    await pipe.aclose()
