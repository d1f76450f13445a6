"""``flowopt serve --workers 2`` as deployed: two worker processes over the real vLLM server,
answering the official ``openai`` client, with ``/metrics`` adding up both workers."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowopt.gateway._background import free_port

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry.name))
    return kids


@pytest.fixture
def two_workers(tmp_path: Path, vllm_url: str, served_model: str) -> Iterator[tuple[str, int]]:
    spec = tmp_path / "gw.yaml"
    spec.write_text(
        f"name: workers\nbackend: {{vllm: {{base_url: '{vllm_url}', model: {served_model}}}}}\n"
        "defaults: {temperature: 0, max_tokens: 4}\n"
        "steps: [{name: a, prompt: '{input}'}]\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowopt.cli",
            "serve",
            str(spec),
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:  # poll until both workers are up (each answers /health once ready)
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"flowopt serve --workers 2 exited: {out[-2000:]}")
            try:
                if (
                    httpx.get(url + "/health", timeout=2).status_code == 200
                    and len(_children(proc.pid)) >= 2
                ):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("flowopt serve --workers 2 did not come up in 120 s")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def test_two_workers_answer_and_metrics_add_up(two_workers: tuple[str, int]) -> None:
    from openai import AsyncOpenAI

    url, pid = two_workers
    assert len(_children(pid)) >= 2

    async def ask() -> list[str]:
        client = AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        try:
            answers = await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model="workers",
                        messages=[{"role": "user", "content": f"Count to {i}."}],
                        max_tokens=4,
                    )
                    for i in range(12)
                )
            )
        finally:
            await client.close()
        return [a.choices[0].message.content or "" for a in answers]

    answers = asyncio.run(ask())
    assert len(answers) == 12 and all(answers)
    text = httpx.get(url + "/metrics", timeout=10).text
    ok = sum(
        float(m.group(1))
        for m in re.finditer(
            r'^flowopt_gateway_requests_total\{[^}]*status="200"[^}]*\} (\S+)$', text, re.M
        )
    )
    assert ok == 12, text[:3000]
