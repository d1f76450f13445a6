"""A real multi-step pipeline on the real server: sync/async/stream/batch and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flowopt import Result, TokenEvent, load, pipeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _spec(vllm_url: str, model: str) -> dict[str, object]:
    return {
        "name": "qa",
        "backend": {"vllm": {"base_url": vllm_url, "model": model}},
        "middleware": ["noop", {"logging": "DEBUG"}],
        "defaults": {"temperature": 0, "max_tokens": 16},
        "steps": [
            {"name": "answer", "system": "Answer in one short sentence.", "prompt": "{input}"},
            {"name": "summary", "prompt": "Summarise in three words: {answer}"},
        ],
    }


@pytest.fixture
def spec_file(tmp_path: Path, vllm_url: str, served_model: str) -> Path:
    p = tmp_path / "qa.yaml"
    p.write_text(yaml.safe_dump(_spec(vllm_url, served_model), sort_keys=False))
    return p


async def test_ainvoke_stream_and_batch(spec_file: Path) -> None:
    pipe = load(spec_file)
    r = await pipe.ainvoke("What is the sun?", user="alice")
    assert [h.step for h in r.hops] == ["answer", "summary"]
    assert r.text and r.usage.output_tokens > 0 and r.model
    assert any(d.middleware == "logging" for d in r.decisions)

    tokens: list[str] = []
    final: Result | None = None
    async for ev in pipe.astream("What is the sun?", user="alice"):
        if isinstance(ev, TokenEvent):
            tokens.append(ev.text)
        elif isinstance(ev, Result):
            final = ev
    assert final is not None and final.text == r.text  # greedy: stream == non-stream
    assert final.ttft_ms is not None

    results = await pipe.abatch(
        [f"What is {x}?" for x in ("rain", "snow", "wind", "fog")], concurrency=4
    )
    assert all(isinstance(x, Result) and x.text for x in results)
    await pipe.aclose()


def test_sync_facade_matches_async(spec_file: Path, vllm_url: str, served_model: str) -> None:
    pipe = pipeline(**{k: v for k, v in _spec(vllm_url, served_model).items()})  # type: ignore[arg-type]
    assert pipe == load(spec_file)
    r1 = pipe.invoke("Name a colour.")
    r2 = pipe.invoke("Name a colour.")
    assert r1.text == r2.text
    pipe.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "flowopt.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def test_cli_run_json(spec_file: Path) -> None:
    out = _cli("run", str(spec_file), "--input", "What is rain?", "--user", "bob", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"text", "model", "usage", "latency_ms", "decisions"} <= set(data)
    assert data["usage"]["input_tokens"] > 0 and data["usage"]["output_tokens"] > 0
    assert {d["middleware"] for d in data["decisions"]} >= {"logging"}
    streamed = _cli("run", str(spec_file), "--input", "What is rain?", "--stream", "--json")
    assert streamed.returncode == 0, streamed.stderr
    assert json.loads(streamed.stdout)["ttft_ms"] > 0


def test_cli_validate(spec_file: Path, tmp_path: Path) -> None:
    ok = _cli("validate", str(spec_file))
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nbackend: {vllm: {base_url: 'http://h'}}\nsteps:\n  - name: a\n"
        "    prompt: hi\n    temprature: 0\n"
    )
    res = _cli("validate", str(bad))
    assert res.returncode == 2
    assert str(bad) in res.stderr and "steps[0].temprature" in res.stderr
    assert "Traceback" not in res.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(
        "backend: {vllm: {base_url: 'http://h'}}\nmiddleware: [noopp]\n"
        "steps: [{name: a, prompt: hi}]\n"
    )
    res = _cli("validate", str(unknown))
    assert res.returncode == 2 and "did you mean 'noop'" in res.stderr


def test_cli_run_backend_down_is_clean_error(tmp_path: Path) -> None:
    from flowopt.local.server import find_free_port

    spec = tmp_path / "down.yaml"
    spec.write_text(
        f"backend: {{vllm: {{base_url: 'http://127.0.0.1:{find_free_port()}', "
        "model: m}}\nsteps: [{name: a, prompt: '{input}'}]\n"
    )
    res = _cli("run", str(spec), "--input", "hi")
    assert res.returncode == 1
    assert "cannot connect" in res.stderr and "Traceback" not in res.stderr


def test_plugins_list() -> None:
    res = _cli("plugins", "list")
    assert res.returncode == 0
    for name in ("noop", "logging", "vllm"):
        assert name in res.stdout


def test_demo_shows_answers_decisions_and_trace(
    vllm_url: str, served_model: str, qwen_url: str
) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FLOWOPT_MODEL": served_model}
    env.pop("FLOWOPT_STRONG_MODEL", None)
    cmd = ["demo", "--base-url", vllm_url, "--strong-url", qwen_url]
    out = subprocess.run(
        [sys.executable, "-m", "flowopt.cli", *cmd],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert text.count("pipeline support-demo") == 5  # one span tree per question
    assert "cache: hit" in text and "tier=exact" in text  # the repeated question
    assert "cascade:" in text and "strongest_cost" in text
    # two real tiers: the cheap one answers some hops, the strong one the others
    assert f"model={served_model}" in text and "model=qwen0.5b" in text
    assert "LLM hops" in text and "answered by the cache" in text
    assert "Traceback" not in out.stderr
    # a clean first impression: no library progress bars or warnings, and every hop's
    # latency (and a streamed hop's TTFT) is measured, never a 0 ms placeholder
    assert "Loading weights" not in out.stdout + out.stderr
    assert "it/s]" not in out.stdout + out.stderr
    assert "latency=0ms" not in text and "ttft=0ms" not in text
    assert "ttft=" in text
