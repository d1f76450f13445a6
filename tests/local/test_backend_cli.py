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
