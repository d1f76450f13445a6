"""Tracing settings belong to the pipeline, not the process: content capture and exporters
are per pipeline, and building a pipeline changes no global OpenTelemetry state."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from tests.otlp_receiver import otlp_receiver

from flowopt import pipeline
from flowopt.spec import parse_spec
from flowopt.testing import FakeBackend, SpanCapture
from flowopt.tracing import CAPTURE_ENV, PipelineTracing

ROOT = Path(__file__).resolve().parents[2]
STEPS = [{"name": "a", "prompt": "secret {input}"}]
IN, OUT = "gen_ai.input.messages", "gen_ai.output.messages"


def _pipe(name: str, tracing: dict[str, Any] | None = None, **kw: Any) -> Any:
    return pipeline(name, backend=FakeBackend(), steps=STEPS, tracing=tracing, **kw)


def _chat_of(spans: SpanCapture, trace_id: str | None) -> ReadableSpan:
    assert trace_id is not None
    (chat,) = [
        s
        for s in spans.by_name("chat ")
        if format(s.context.trace_id, "032x") == trace_id  # type: ignore[union-attr]
    ]
    return chat


async def test_capture_is_decided_per_pipeline(
    spans: SpanCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CAPTURE_ENV, raising=False)
    capturing = _pipe("capturing", {"capture_content": True})
    private = _pipe("private")  # built after the capturing one: must not inherit it
    r_cap, r_priv = await asyncio.gather(capturing.ainvoke("42"), private.ainvoke("43"))
    cap = _chat_of(spans, r_cap.trace_id).attributes or {}
    priv = _chat_of(spans, r_priv.trace_id).attributes or {}
    assert "secret 42" in str(cap[IN]) and "echo: secret 42" in str(cap[OUT])
    assert IN not in priv and OUT not in priv
    assert not any(
        "secret 43" in str(v) for s in spans.spans() for v in (s.attributes or {}).values()
    )
    assert capturing.tracing.capture_content and not private.tracing.capture_content


async def test_env_var_is_only_the_default(
    spans: SpanCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "true")
    unset = _pipe("unset")
    refused = _pipe("refused", {"capture_content": False})
    r_unset, r_refused = await unset.ainvoke("x"), await refused.ainvoke("y")
    assert IN in (_chat_of(spans, r_unset.trace_id).attributes or {})
    attrs = _chat_of(spans, r_refused.trace_id).attributes or {}
    assert IN not in attrs and OUT not in attrs


def test_capture_content_round_trips_through_yaml() -> None:
    base = {"name": "t", "backend": "fake", "steps": STEPS}
    assert "tracing" not in parse_spec(base).to_yaml()
    off = parse_spec({**base, "tracing": {"capture_content": False}})
    assert off.tracing.capture_content is False
    assert "capture_content: false" in off.to_yaml()


def test_building_a_pipeline_keeps_the_global_provider(spans: SpanCapture) -> None:
    before = trace.get_tracer_provider()
    plain = _pipe("plain")
    _pipe("capturing", {"capture_content": True, "middleware_spans": False})
    own = _pipe("own", {"exporter": "console", "service_name": "own-console"})
    assert trace.get_tracer_provider() is before
    assert plain.tracing.provider is None
    assert own.tracing.provider is not None and own.tracing.provider is not before


def test_a_fresh_process_gets_no_global_provider_from_a_pipeline() -> None:
    """In a fresh process (no SDK provider yet) building pipelines installs none; a spec
    asking for an exporter gets its own provider and its spans reach that exporter only."""
    code = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from flowopt import pipeline
        from flowopt.testing import FakeBackend

        steps = [{"name": "a", "prompt": "{input}"}]
        before = trace.get_tracer_provider()
        plain = pipeline("plain", backend=FakeBackend(), steps=steps)
        pipeline("cap", backend=FakeBackend(), steps=steps, tracing={"capture_content": True})
        own = pipeline("own", backend=FakeBackend(), steps=steps, tracing={"exporter": "console"})
        assert trace.get_tracer_provider() is before, "a pipeline changed the global provider"
        assert not isinstance(before, TracerProvider)
        assert isinstance(own.tracing.provider, TracerProvider)
        r_plain, r_own = plain.invoke("hi"), own.invoke("hi")
        assert r_plain.trace_id is None  # the global provider is still the no-op one
        own.close()
        print("TRACE", r_own.trace_id)

        # the application installs its provider later: pipelines built before use it
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from flowopt import configure_tracing

        memory = InMemorySpanExporter()
        configure_tracing(exporter=None, span_processor=SimpleSpanProcessor(memory))
        assert plain.invoke("again").trace_id is not None
        names = sorted(s.name for s in memory.get_finished_spans())
        assert names == ["chat fake-model", "pipeline plain", "step a"], names
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    trace_id = out.stdout.split("TRACE ")[1].split()[0]
    assert f'"trace_id": "0x{trace_id}"' in out.stdout  # the console exporter printed it
    assert '"name": "pipeline own"' in out.stdout
    assert '"name": "pipeline plain"' not in out.stdout


async def test_spec_exporter_gets_its_own_provider_and_spans_arrive(spans: SpanCapture) -> None:
    with otlp_receiver() as rx:
        tracing = {
            "exporter": "otlp",
            "endpoint": rx.endpoint,
            "service_name": "own-otlp",
            "capture_content": True,
        }
        # resilience composes an inner stack: its layer spans must use the same provider
        pipe = _pipe("exported", tracing, middleware=["noop", "resilience"])
        twin = _pipe("twin", tracing)
        other = _pipe("other", {**tracing, "service_name": "another"})
        assert pipe.tracing.provider is twin.tracing.provider  # one per exporter config
        assert other.tracing.provider is not pipe.tracing.provider
        assert pipe.tracing.provider is not trace.get_tracer_provider()
        result = await pipe.ainvoke("hello")
        await pipe.aclose()  # flushes the pipeline's own provider
        assert result.trace_id is not None
        got = rx.of_trace(result.trace_id)
    names = sorted(s["name"] for s in got)
    assert names == [
        "chat fake-model",
        "middleware breaker",
        "middleware noop",
        "middleware resilience",
        "middleware retry",
        "pipeline exported",
        "step a",
    ], rx.dump()
    by_id = {s["span_id"]: s for s in got}
    (root,) = [s for s in got if s["parent_id"] not in by_id]
    assert root["name"] == "pipeline exported" and root["parent_id"] is None
    assert {s["service"] for s in got} == {"own-otlp"}
    (chat,) = [s for s in got if s["name"].startswith("chat ")]
    assert "hello" in json.dumps(chat["attributes"][IN])
    # nothing of this pipeline went to the application's (global) provider
    assert not [s for s in spans.spans() if format(s.context.trace_id, "032x") == result.trace_id]


def test_default_tracing_reads_the_process_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "1")
    assert PipelineTracing.default().capture_content
    monkeypatch.delenv(CAPTURE_ENV)
    d = PipelineTracing.default()
    assert not d.capture_content and d.middleware_spans and d.provider is None


def test_flowopt_run_exports_the_specs_spans_before_it_exits(tmp_path: Path) -> None:
    """`flowopt run` with `tracing: {exporter: otlp}` and the standard OTEL_* variables, as
    the Phoenix integration test does, here against an in-process receiver."""
    spec = tmp_path / "run.yaml"
    spec.write_text(
        "name: cli\nbackend: fake\nmiddleware: [noop]\n"
        "steps: [{name: a, prompt: '{input}'}, {name: b, prompt: 'again {a}'}]\n"
        "tracing: {exporter: otlp}\n"
    )
    with otlp_receiver() as rx:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=rx.url, OTEL_SERVICE_NAME="cli-test")
        cmd = ["run", str(spec), "--json", "--stream", "--input", "hello"]
        out = subprocess.run(
            [sys.executable, "-m", "flowopt.cli", *cmd],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        trace_id = json.loads(out.stdout)["trace_id"]
        got = rx.of_trace(trace_id)
    assert sorted(s["name"] for s in got) == sorted(
        ["pipeline cli", "step a", "step b"] + ["middleware noop", "chat fake-model"] * 2
    ), rx.dump()
    assert {s["service"] for s in got} == {"cli-test"}
    assert not any("gen_ai.input.messages" in s["attributes"] for s in got)
