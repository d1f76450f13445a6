"""Every script in examples/ runs against the real local server (CI runs them all)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path, vllm_url: str, served_model: str, redis_url: str) -> None:
    env = {
        **os.environ,
        "FLOWOPT_BASE_URL": vllm_url,
        "FLOWOPT_MODEL": served_model,
        "FLOWOPT_REDIS_URL": redis_url,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, f"{script.name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 2
