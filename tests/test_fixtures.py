"""The shared fixtures really start what they promise (so other tests can trust them)."""

from __future__ import annotations

import socket
import uuid
from typing import TYPE_CHECKING

import httpx
import psycopg
import pytest

if TYPE_CHECKING:
    from conftest import Phoenix


@pytest.mark.integration
def test_vllm_url_serves_the_model(vllm_url: str, served_model: str) -> None:
    resp = httpx.post(
        f"{vllm_url}/v1/completions",
        json={"model": served_model, "prompt": "1, 2, 3,", "max_tokens": 4, "temperature": 0},
        timeout=120,
    )
    resp.raise_for_status()
    assert resp.json()["choices"][0]["text"].strip()


@pytest.mark.services
def test_redis_url_answers(redis_url: str) -> None:
    host_port = redis_url.removeprefix("redis://").split("/")[0]
    host, port = host_port.split(":")
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(b"SET k v\r\nGET k\r\n")
        data = b""
        while not data.endswith(b"v\r\n"):
            data += s.recv(64)
    assert data == b"+OK\r\n$1\r\nv\r\n"


@pytest.mark.services
def test_postgres_dsn_has_pgvector(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector").fetchone()
    assert row is not None and row[0] == pytest.approx(1.0)


@pytest.mark.services
def test_phoenix_receives_and_returns_spans(phoenix: Phoenix) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    project = f"fixture-{uuid.uuid4().hex[:8]}"
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(phoenix.otlp_endpoint)))
    tracer = provider.get_tracer("flowopt.tests")
    with tracer.start_as_current_span("outer") as outer:
        outer.set_attribute("flowopt.cache.hit", True)
        with tracer.start_as_current_span("inner"):
            pass
    provider.shutdown()

    spans = phoenix.spans(project, min_count=2)
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"outer", "inner"}
    assert by_name["inner"]["parent_id"] == by_name["outer"]["context"]["span_id"]
    assert by_name["outer"]["attributes"]["flowopt.cache.hit"] is True
