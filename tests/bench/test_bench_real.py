"""``flowopt bench`` against the real local vLLM server, at a tiny scale (a few requests
of 4 tokens each: the CPU server does ~40 tokens/s per stream)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowopt.cli import cli

pytestmark = pytest.mark.integration


def _bench(*args: str) -> str:
    result = CliRunner().invoke(cli, ["bench", *args, "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_users_shape_over_http_writes_json_and_html(vllm_url: str, tmp_path: Path) -> None:
    out = _bench(
        "--url",
        vllm_url,
        "--users",
        "2",
        "--requests",
        "2",
        "--max-tokens",
        "4",
        "--slo-ttft-ms",
        "60000",
        "--json",
        str(tmp_path / "r.json"),
        "--html",
        str(tmp_path / "r.html"),
    )
    assert "Users: 2  Requests per user: 2  Total: 4  Successful: 4  Failed: 0" in out
    data = json.loads((tmp_path / "r.json").read_text())
    lv = data["variants"][0]["levels"][0]
    assert lv["succeeded"] == 4 and lv["output_tokens"] >= 4
    assert lv["ttft_ms"]["p50"] > 0 and lv["e2e_ms"]["p99"] >= lv["ttft_ms"]["p99"]
    assert lv["goodput_req_s"] == lv["req_s"]  # a 60 s TTFT bound is met by every request
    assert data["client_overhead"]["parse_ms_per_request_max"] > 0
    assert "<svg" in (tmp_path / "r.html").read_text()


def test_concurrency_sweep_rate_sweep_and_soak(vllm_url: str, tmp_path: Path) -> None:
    _bench(
        "--url",
        vllm_url,
        "--concurrency",
        "1,2",
        "--requests",
        "1",
        "--max-tokens",
        "4",
        "--json",
        str(tmp_path / "c.json"),
    )
    levels = json.loads((tmp_path / "c.json").read_text())["variants"][0]["levels"]
    assert [lv["load"] for lv in levels] == [1, 2] and [lv["total"] for lv in levels] == [1, 2]

    _bench(
        "--url",
        vllm_url,
        "--rate",
        "4",
        "--duration",
        "0.5",
        "--max-tokens",
        "4",
        "--json",
        str(tmp_path / "r.json"),
    )
    (lv,) = json.loads((tmp_path / "r.json").read_text())["variants"][0]["levels"]
    assert lv["load_kind"] == "rate" and lv["total"] == 2 and lv["succeeded"] == 2

    out = _bench(
        "--url",
        vllm_url,
        "--soak",
        "1",
        "--concurrency",
        "1",
        "--max-tokens",
        "4",
        "--json",
        str(tmp_path / "s.json"),
    )
    data = json.loads((tmp_path / "s.json").read_text())["variants"][0]
    assert data["levels"][0]["succeeded"] >= 1 and data["windows"]
    assert "Soak windows" in out


def test_errors_are_counted_by_kind(vllm_url: str, tmp_path: Path) -> None:
    # A model the server does not serve: every request fails with the server's 404.
    _bench(
        "--url",
        vllm_url,
        "--model",
        "no-such-model",
        "--users",
        "1",
        "--requests",
        "2",
        "--json",
        str(tmp_path / "e.json"),
    )
    (lv,) = json.loads((tmp_path / "e.json").read_text())["variants"][0]["levels"]
    assert lv["succeeded"] == 0 and lv["errors"] == {"http_404": 2}


def test_spec_in_process_with_compare(vllm_url: str, served_model: str, tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(
        f"name: bench-spec\nbackend: {{vllm: {{base_url: '{vllm_url}', model: {served_model}}}}}\n"
        "middleware: [noop, logging]\nsteps: [{name: a, prompt: '{input}'}]\n"
    )
    out = _bench(
        str(spec),
        "--users",
        "1",
        "--requests",
        "1",
        "--max-tokens",
        "4",
        "--compare",
        "--json",
        str(tmp_path / "cmp.json"),
    )
    data = json.loads((tmp_path / "cmp.json").read_text())
    names = [v["name"] for v in data["variants"]]
    assert names == ["full", "without noop", "without logging", "no middleware"]
    assert all(v["levels"][0]["succeeded"] == 1 for v in data["variants"])
    assert {r["variant"] for r in data["ratios"]} == set(names[1:])
    assert "Ablation (variant / full)" in out
