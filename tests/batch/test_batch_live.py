"""Batch jobs end to end against the real vLLM server.

- the official ``openai`` client uploads a file, creates a batch on ``flowopt serve``'s
  app, waits for it and reads the output and error files;
- ``flowopt batch run`` (a real subprocess) is killed with SIGKILL after some lines are
  committed, restarted with the same job id, and every ``custom_id`` is answered exactly
  once; the malformed lines are in the error file by number.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import openai
import pytest

from flowopt import pipeline
from flowopt.batch import BATCH_PRIORITY, open_store
from flowopt.gateway._background import BackgroundServer
from flowopt.gateway.app import create_app
from flowopt.middleware.base import CallNext, MiddlewareBase
from flowopt.spec import BatchSettings, GatewaySpec
from flowopt.types import Request, Response

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
KEY = "sk-batch-tenant-0123"
ROOT = Path(__file__).resolve().parents[2]


def _lines(model: str, n: int, max_tokens: int) -> list[str]:
    return [
        json.dumps(
            {
                "custom_id": f"q-{i}",
                "method": "POST",
                "url": CHAT,
                "body": {
                    "model": model,
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": f"What is {i} plus {i}?"}],
                },
            }
        )
        for i in range(n)
    ]


def _until(check: object, timeout: float, what: str) -> None:
    """Poll ``check()`` until true (a state change this test waits on), or fail."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


class PriorityProbe(MiddlewareBase):
    """Records the priority each request reached the middleware stack with."""

    name: ClassVar[str] = "priority-probe"

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        self.seen.append(request.priority)
        return await call_next(request)


PROBE = PriorityProbe()


@pytest.fixture
def batch_gateway(tmp_path: Path, vllm_url: str, served_model: str) -> Iterator[str]:
    PROBE.seen.clear()
    pipe = pipeline(
        "batch",
        backend={"vllm": {"base_url": vllm_url, "model": served_model}},
        middleware=[PROBE],
        steps=[{"name": "answer", "prompt": "{input}"}],
    )
    settings = GatewaySpec(
        api_keys={"acme": KEY},  # type: ignore[dict-item]
        batch=BatchSettings(store=str(tmp_path / "jobs.sqlite"), concurrency=8),
    )
    with BackgroundServer(create_app(pipe, settings)) as server:
        yield server.base_url


def test_openai_client_runs_a_batch_through_the_gateway(
    batch_gateway: str, served_model: str
) -> None:
    client = openai.OpenAI(base_url=batch_gateway + "/v1", api_key=KEY, max_retries=0)
    lines = _lines(served_model, 30, 4)
    lines.insert(5, "this line is not JSON")
    bad_model = json.loads(lines[10])
    bad_model["body"]["model"] = "no-such-model"
    lines[10] = json.dumps(bad_model)
    uploaded = client.files.create(
        file=("questions.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
    )
    assert uploaded.purpose == "batch" and uploaded.filename == "questions.jsonl"
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h", metadata={"k": "v"}
    )
    assert batch.status == "in_progress" and batch.metadata == {"k": "v"}
    finished: list[openai.types.Batch] = []

    def done() -> bool:
        finished[:] = [client.batches.retrieve(batch.id)]
        return finished[0].status == "completed"

    _until(done, 300, "the batch to complete")
    final = finished[0]
    assert final.request_counts is not None
    assert (final.request_counts.total, final.request_counts.completed) == (31, 29)
    assert final.output_file_id and final.error_file_id and final.completed_at
    out = [json.loads(x) for x in client.files.content(final.output_file_id).text.splitlines()]
    wanted = {f"q-{i}" for i in range(30)} - {bad_model["custom_id"]}
    assert sorted(r["custom_id"] for r in out) == sorted(wanted)
    for record in out:
        body = record["response"]["body"]
        assert record["response"]["status_code"] == 200
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] >= 1
    # the batch's usage is its answers' usage added up
    used = [r["response"]["body"]["usage"] for r in out]
    assert final.usage is not None
    assert final.usage.input_tokens == sum(u["prompt_tokens"] for u in used)
    assert final.usage.output_tokens == sum(u["completion_tokens"] for u in used)
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens
    errors = [json.loads(x) for x in client.files.content(final.error_file_id).text.splitlines()]
    by_id = {e["custom_id"]: e for e in errors}
    assert by_id[None]["error"]["line"] == 6
    assert by_id[bad_model["custom_id"]]["response"]["status_code"] == 404
    assert [b.id for b in client.batches.list()] == [batch.id]
    # every line reached the middleware (the shedder among them) at batch priority
    assert PROBE.seen == [BATCH_PRIORITY] * 29  # the unknown model stops before them
    # a wrong key is refused (tenant isolation: test_store_unit); so is a wrong purpose
    stranger = openai.OpenAI(base_url=batch_gateway + "/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.batches.retrieve(batch.id)
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="fine-tune")


def test_worker_killed_mid_job_resumes_with_each_custom_id_once(
    tmp_path: Path, vllm_url: str, served_model: str
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: batch\n"
        f"backend: {{vllm: {{base_url: '{vllm_url}', model: {served_model}}}}}\n"
        "steps: [{name: answer, prompt: '{input}'}]\n"
        "gateway: {batch: {concurrency: 4}}\n"
    )
    total = 30
    lines = _lines(served_model, total, 8)
    lines[7] = "{broken"
    lines[21] = json.dumps({"custom_id": "q-3", "method": "POST", "url": CHAT, "body": {}})
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    db, out, err = tmp_path / "jobs.sqlite", tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    cmd = [
        sys.executable, "-m", "flowopt.cli", "batch", "run", str(src), "--spec", str(spec),
        "--store", str(db), "--job-id", "job-1", "--out", str(out), "--errors", str(err),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _until(db.exists, 60, "the store to be created")
    store = open_store(db)

    def some_committed() -> bool:
        if first.poll() is not None:
            pytest.fail(f"the worker exited early: {first.communicate()[1][-2000:]!r}")
        try:
            return store.counts("job-1").get("done", 0) >= 6
        except Exception:  # the job is not created yet
            return False

    _until(some_committed, 120, "six committed lines")
    first.send_signal(signal.SIGKILL)
    first.wait()
    at_kill = store.counts("job-1")
    assert at_kill.get("done", 0) < total - 2, at_kill  # killed mid-job
    assert at_kill.get("running", 0) >= 1, at_kill  # with lines in flight
    assert not out.exists()

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads(second.stdout)
    assert summary["status"] == "completed" and summary["completed"] == total - 2
    records = [json.loads(x) for x in out.read_text().splitlines()]
    ids = [r["custom_id"] for r in records]
    assert len(ids) == len(set(ids)) == total - 2  # each custom_id exactly once
    assert set(ids) == {f"q-{i}" for i in range(total) if i not in (7, 21)}
    assert all(r["response"]["status_code"] == 200 for r in records)
    errors = [json.loads(x) for x in err.read_text().splitlines()]
    assert [e["error"]["line"] for e in errors] == [8, 22]
    assert "repeats line 4" in errors[1]["error"]["message"]
    assert "batch job-1" in second.stderr  # progress on stderr
    store.close()


def test_gateway_finishes_a_job_it_finds_open_at_start_up(
    tmp_path: Path, vllm_url: str, served_model: str
) -> None:
    db = tmp_path / "jobs.sqlite"
    store = open_store(db)  # a job left open (by a crash, or created by `flowopt batch run`)
    f = store.put_file(
        ("\n".join(_lines(served_model, 3, 4)) + "\n").encode(),
        filename="in.jsonl",
        purpose="batch",
        tenant="acme",
    )
    job_id = store.create_job(input_file_id=f["id"], endpoint=CHAT, tenant="acme")["id"]
    store.close()
    pipe = pipeline(
        "batch",
        backend={"vllm": {"base_url": vllm_url, "model": served_model}},
        steps=[{"name": "answer", "prompt": "{input}"}],
    )
    settings = GatewaySpec(
        api_keys={"acme": KEY},  # type: ignore[dict-item]
        batch=BatchSettings(store=str(db)),
    )
    with BackgroundServer(create_app(pipe, settings)) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0)
        _until(lambda: client.batches.retrieve(job_id).status == "completed", 120, "the open job")
        done = client.batches.retrieve(job_id)
        assert done.request_counts is not None and done.request_counts.completed == 3
