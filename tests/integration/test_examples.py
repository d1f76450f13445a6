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


def _needs_strong(script: Path) -> bool:
    """Examples with a strong tier read FLOWOPT_STRONG_URL; only those wait for Qwen."""
    return "FLOWOPT_STRONG_URL" in script.read_text()


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(
    script: Path, vllm_url: str, served_model: str, redis_url: str, request: pytest.FixtureRequest
) -> None:
    strong: dict[str, str] = {}
    if _needs_strong(script):
        strong = {
            "FLOWOPT_STRONG_URL": request.getfixturevalue("qwen_url"),
            "FLOWOPT_STRONG_MODEL": "qwen0.5b",
        }
    env = {
        **strong,
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
    assert any(_needs_strong(p) for p in EXAMPLES)
