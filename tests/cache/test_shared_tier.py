"""The shared tier against real servers: Postgres + pgvector and Redis.

Two app processes (``shared_worker.py``) share hits through the stores; the stores pass
the same conformance checks as the embedded ones; a store that is down costs a miss, never
an error.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_stores import check_conformance

from flowopt import pipeline
from flowopt.cache.stores.postgres import PostgresStore
from flowopt.cache.stores.redis import RedisExactStore

pytestmark = [pytest.mark.integration, pytest.mark.services]

WORKER = Path(__file__).with_name("shared_worker.py")


def run_worker(*args: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, str(WORKER), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_postgres_store_conformance(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn, table="flowopt_cache_conformance")
    try:
        store.clear()
        check_conformance(store)
    finally:
        store.close()


def test_postgres_store_trims_to_its_bound(postgres_dsn: str) -> None:
    from test_stores import entry

    store = PostgresStore(postgres_dsn, table="flowopt_cache_trim", max_entries=10, trim_every=5)
    try:
        store.clear()
        for i in range(30):
            store.put(entry(f"k{i}", vec=i))
        assert store.stats().entries <= 10
        assert store.get_exact("k29") is not None and store.get_exact("k0") is None
    finally:
        store.close()


def test_redis_store_conformance(redis_url: str) -> None:
    store = RedisExactStore(redis_url, prefix="conformance:")
    try:
        store.clear()
        check_conformance(store)
    finally:
        store.close()


def test_two_processes_share_hits(
    vllm_url: str, served_model: str, postgres_dsn: str, redis_url: str
) -> None:
    common = [vllm_url, served_model, postgres_dsn, redis_url, "acme"]
    first = run_worker(*common, "How do I reset my password?")
    assert [r["action"] for r in first] == ["miss"] and first[0]["stored"]
    second = run_worker(
        *common,
        "How do I reset my password?",
        "How can I reset my password?",
        "How do I reset my router?",
    )
    exact, semantic, other = second
    assert (exact["action"], exact["tier"]) == ("hit", "exact")
    assert exact["text"] == first[0]["text"]
    assert (semantic["action"], semantic["tier"]) == ("hit", "semantic"), semantic
    assert other["action"] == "miss"
    # Another tenant in a third process gets nothing from the shared stores.
    third = run_worker(
        vllm_url, served_model, postgres_dsn, redis_url, "globex", "How do I reset my password?"
    )
    assert third[0]["action"] == "miss"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_stores_down_backend_answers_span_records(
    vllm_url: str, served_model: str, spans: Any
) -> None:
    port = _closed_port()
    pipe = pipeline(
        "stores-down",
        backend={"vllm": {"base_url": vllm_url, "model": served_model}},
        middleware=[
            {
                "cache": {
                    "store": "postgres",
                    "store_options": {
                        "dsn": f"postgresql://postgres@127.0.0.1:{port}/postgres",
                        "timeout_s": 0.5,
                    },
                    "exact_store": "redis",
                    "exact_store_options": {"url": f"redis://127.0.0.1:{port}/0"},
                }
            }
        ],
        steps=[
            {"name": "answer", "prompt": "{input}", "params": {"temperature": 0.0, "max_tokens": 8}}
        ],
    )
    result = await pipe.ainvoke("Say hello.", tenant="acme")
    await pipe.aclose()
    assert result.text and result.usage.output_tokens > 0
    (hop,) = result.hops
    (d,) = [d for d in hop.response.decisions if d.middleware == "cache"]
    assert d.action == "miss" and not d.detail["stored"]
    assert "redis" in d.detail["store_error"]
    (span,) = spans.by_name("middleware cache")
    assert "redis" in span.attributes["flowopt.cache.store_error"]
    errors = [e.attributes["error"] for e in span.events if e.name == "flowopt.cache.store_error"]
    assert any("postgres" in e for e in errors) and any("redis" in e for e in errors)
    assert span.status.is_ok
