"""Spans of a real pipeline run go over OTLP/HTTP to a real trace backend (Arize Phoenix,
started by the test session) and read back as one tree with GenAI attributes.

The run happens in a subprocess (`flowopt run`) configured only by the standard ``OTEL_*``
variables plus ``tracing: {exporter: otlp}`` in the spec, as an operator would do it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.services]

ROOT = Path(__file__).resolve().parents[2]


def _run(spec: Path, phoenix_url: str, *extra: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix_url,  # the exporter appends /v1/traces
        "OTEL_SERVICE_NAME": "flowopt-test",
    }
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    out = subprocess.run(
        [sys.executable, "-m", "flowopt.cli", "run", str(spec), "--json", *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _spec(tmp_path: Path, vllm_url: str, model: str, capture: bool) -> Path:
    data = {
        "name": "traced",
        "backend": {"vllm": {"base_url": vllm_url, "model": model}},
        "middleware": ["noop"],
        "defaults": {"temperature": 0, "max_tokens": 8},
        "steps": [
            {"name": "first", "prompt": "{input}"},
            {"name": "second", "prompt": "Repeat: {first}"},
        ],
        "tracing": {"exporter": "otlp", "capture_content": capture},
    }
    p = tmp_path / f"traced-{capture}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _wait_trace(phoenix: Any, trace_id: str, count: int, timeout: float = 30.0) -> list[Any]:
    """Poll Phoenix until the trace has ``count`` spans (ingestion is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = [
            s for s in phoenix.spans(min_count=0, timeout=0) if s["context"]["trace_id"] == trace_id
        ]
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


def _tree(spans: list[dict[str, Any]], trace_id: str) -> dict[str, Any]:
    mine = [s for s in spans if s["context"]["trace_id"] == trace_id]
    by_id = {s["context"]["span_id"]: s for s in mine}
    roots = [s for s in mine if not s.get("parent_id") or s["parent_id"] not in by_id]
    return {"spans": mine, "by_id": by_id, "roots": roots}


def _chain(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[str]:
    names = []
    cur = span
    while cur.get("parent_id") in by_id:
        cur = by_id[cur["parent_id"]]
        names.append(cur["name"])
    return names


def test_pipeline_trace_reads_back_as_one_tree(
    tmp_path: Path, vllm_url: str, served_model: str, phoenix: Any
) -> None:
    result = _run(
        _spec(tmp_path, vllm_url, served_model, False), phoenix.url, "--input", "Name a fruit."
    )
    trace_id = result["trace_id"]
    tree = _tree(_wait_trace(phoenix, trace_id, 7), trace_id)
    names = sorted(s["name"] for s in tree["spans"])
    assert names == sorted(
        [
            "pipeline traced",
            "step first",
            "step second",
            "middleware noop",
            "middleware noop",
            f"chat {served_model}",
            f"chat {served_model}",
        ]
    )
    assert [r["name"] for r in tree["roots"]] == ["pipeline traced"]
    chats = [s for s in tree["spans"] if s["name"].startswith("chat ")]
    for chat in chats:
        chain = _chain(chat, tree["by_id"])
        assert chain[0] == "middleware noop" and chain[2] == "pipeline traced"
        assert chain[1] in ("step first", "step second")
        attrs = chat["attributes"]
        flat = json.dumps(attrs)
        for key in (
            "gen_ai.operation.name",
            "gen_ai.request.model",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.response.finish_reasons",
        ):
            assert key in flat or _has(attrs, key), key
        assert "gen_ai.input.messages" not in flat  # content capture is off by default


def test_content_capture_when_switched_on(
    tmp_path: Path, vllm_url: str, served_model: str, phoenix: Any
) -> None:
    result = _run(
        _spec(tmp_path, vllm_url, served_model, True),
        phoenix.url,
        "--input",
        "Name a colour.",
        "--stream",
    )
    trace_id = result["trace_id"]
    tree = _tree(_wait_trace(phoenix, trace_id, 5), trace_id)
    chats = [s for s in tree["spans"] if s["name"].startswith("chat ")]
    assert len(chats) == 2
    flat = json.dumps([c["attributes"] for c in chats])
    assert "Name a colour." in flat  # the prompt is there only because capture is on
    assert "gen_ai.output.messages" in flat or "output" in flat
    assert "time_to_first_chunk" in flat or "ttft_ms" in flat


def _has(attrs: dict[str, Any], dotted: str) -> bool:
    cur: Any = attrs
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False
        cur = cur[part]
    return True
