"""The batch job store on sqlite, and the worker over a fake executor (no model server).

``FakeExecutor`` stands in for the pipeline: it answers each line from its body, can fail
a line on purpose, and records how often each line ran.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowopt.batch import BatchSettings, BatchWorker, Claimed, SqliteJobStore, seconds_until_open
from flowopt.batch._execute import Outcome
from flowopt.errors import InvalidRequestError

CHAT = "/v1/chat/completions"


def _line(cid: str, text: str = "hi", url: str = CHAT) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    return json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body})


def _job(store: SqliteJobStore, lines: list[str], tenant: str | None = None) -> str:
    f = store.put_file(
        ("\n".join(lines) + "\n").encode(), filename="in.jsonl", purpose="batch", tenant=tenant
    )
    return str(store.create_job(input_file_id=f["id"], endpoint=CHAT, tenant=tenant)["id"])


def _records(store: SqliteJobStore, fid: str | None) -> list[dict[str, object]]:
    assert fid is not None
    data = store.file_content(fid, None)
    assert data is not None
    return [json.loads(x) for x in data.decode().splitlines()]


class FakeExecutor:
    """Answers a line with its custom_id; ``fail`` maps custom_id -> (status, times)."""

    def __init__(self, fail: dict[str, tuple[int, int]] | None = None) -> None:
        self.fail = dict(fail or {})
        self.runs: dict[str, int] = {}

    async def __call__(self, line: Claimed) -> Outcome:
        self.runs[line.custom_id] = self.runs.get(line.custom_id, 0) + 1
        status, times = self.fail.get(line.custom_id, (200, 0))
        if status != 200 and self.runs[line.custom_id] <= times:
            body = {"error": {"message": "no", "type": "x", "param": None, "code": "c"}}
            retry = status >= 500 or status == 429
            return Outcome(status, body, "r", retry=retry, shed=status == 503, wait_s=0.0)
        return Outcome(200, {"answer": line.custom_id}, "r")


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobStore:
    return SqliteJobStore(tmp_path / "jobs.sqlite")


def test_malformed_lines_are_reported_by_number_and_the_rest_run(store: SqliteJobStore) -> None:
    lines = [
        _line("a"),
        "{not json",
        _line("a"),  # repeated custom_id
        _line("b", url="/v1/completions"),  # not the batch's endpoint
        json.dumps({"custom_id": "c", "url": CHAT, "body": {"stream": True}}),
        "",
        _line("d"),
    ]
    job_id = _job(store, lines)
    counts = store.counts(job_id)
    assert counts == {"pending": 2, "invalid": 4}
    asyncio.run(BatchWorker(store, FakeExecutor()).run_job(job_id))
    job = store.job(job_id)
    assert job["status"] == "completed"
    assert job["request_counts"] == {"total": 6, "completed": 2, "failed": 4}
    assert [r["custom_id"] for r in _records(store, job["output_file_id"])] == ["a", "d"]
    errors = _records(store, job["error_file_id"])
    assert [e["error"]["line"] for e in errors] == [2, 3, 4, 5]  # type: ignore[index]
    assert "repeats line 1" in errors[1]["error"]["message"]  # type: ignore[index]
    assert "stream" in errors[3]["error"]["message"]  # type: ignore[index]


def test_a_file_with_no_good_line_fails_the_job(store: SqliteJobStore) -> None:
    job = store.job(_job(store, ["nope", "[]"]))
    assert job["status"] == "failed"
    assert [e["line"] for e in job["errors"]["data"]] == [1, 2]


def test_bad_create_arguments_are_typed_errors(store: SqliteJobStore) -> None:
    f = store.put_file(b"{}", filename="x", purpose="batch", tenant=None)
    with pytest.raises(InvalidRequestError) as exc:
        store.create_job(input_file_id=f["id"], endpoint="/v1/images")
    assert exc.value.param == "endpoint"
    with pytest.raises(InvalidRequestError) as exc:
        store.create_job(input_file_id="file-missing", endpoint=CHAT)
    assert exc.value.param == "input_file_id"
    with pytest.raises(InvalidRequestError) as exc:
        store.create_job(input_file_id=f["id"], endpoint=CHAT, completion_window="1d")
    assert exc.value.param == "completion_window"


def test_tenants_see_only_their_own_files_and_jobs(store: SqliteJobStore) -> None:
    job_id = _job(store, [_line("a")], tenant="acme")
    assert store.job(job_id, "acme") is not None
    assert store.job(job_id, "globex") is None
    assert store.job(job_id, None) is None
    assert [j["id"] for j in store.jobs("acme")] == [job_id]
    assert store.jobs("globex") == []


def test_list_pages_newest_first(store: SqliteJobStore) -> None:
    ids = [_job(store, [_line("a")]) for _ in range(3)]
    first = store.jobs(None, limit=2)
    rest = store.jobs(None, after=first[-1]["id"], limit=2)
    assert {j["id"] for j in first + rest} == set(ids)
    assert len(rest) == 1


def test_only_the_current_owner_commits_a_line(store: SqliteJobStore) -> None:
    job_id = _job(store, [_line("a")])
    store.register("w1")
    (line,) = store.claim(job_id, "w1", 5)
    # w1 is presumed dead (no heartbeat within the lease); w2 takes the line over
    assert store.reap(lease_s=-1) == 1
    store.register("w2")
    (again,) = store.claim(job_id, "w2", 5)
    assert again.number == line.number and again.attempts == 2
    assert store.complete(again, "w2", ok=True, record='{"custom_id": "a", "by": "w2"}')
    assert not store.complete(line, "w1", ok=True, record='{"custom_id": "a", "by": "w1"}')
    assert store.finish(job_id)
    job = store.job(job_id)
    assert _records(store, job["output_file_id"]) == [{"custom_id": "a", "by": "w2"}]
    assert not store.finish(job_id)  # closed once


def test_lines_of_a_dead_local_process_come_back_at_once(store: SqliteJobStore) -> None:
    job_id = _job(store, [_line("a"), _line("b")])
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(gone.stdout)
    with store._tx() as cur:  # a worker row as that (finished) process left it
        cur.execute(
            "INSERT INTO flowopt_batch_workers VALUES (?, ?, ?, ?)", ("dead", store.host, pid, 1e12)
        )
    assert len(store.claim(job_id, "dead", 2)) == 2
    assert store.counts(job_id) == {"running": 2}
    assert store.reap(lease_s=3600) == 2  # heartbeat is fresh, but the process is gone
    assert store.counts(job_id) == {"pending": 2}


def test_transient_failures_retry_permanent_ones_go_to_the_error_file(
    store: SqliteJobStore,
) -> None:
    job_id = _job(store, [_line("ok"), _line("flaky"), _line("bad"), _line("down"), _line("shed")])
    fake = FakeExecutor({"flaky": (502, 1), "bad": (400, 99), "down": (502, 99), "shed": (503, 5)})
    settings = BatchSettings(max_attempts=2, concurrency=3)
    worker = BatchWorker(store, fake, settings, backoff_s=0.0)

    async def run() -> None:
        try:
            await worker.run_job(job_id)
        finally:
            await worker.stop()

    asyncio.run(run())
    assert fake.runs == {"ok": 1, "flaky": 2, "bad": 1, "down": 2, "shed": 6}
    job = store.job(job_id)
    assert [r["custom_id"] for r in _records(store, job["output_file_id"])] == [
        "ok",
        "flaky",
        "shed",
    ]
    errors = {
        r["custom_id"]: r["response"]["status_code"] for r in _records(store, job["error_file_id"])
    }  # type: ignore[index]
    assert errors == {"bad": 400, "down": 502}


def test_cancel_drops_pending_lines_into_the_error_file(store: SqliteJobStore) -> None:
    job_id = _job(store, [_line("a"), _line("b"), _line("c")])
    store.register("w")
    (first,) = store.claim(job_id, "w", 1)
    job = store.cancel(job_id, None)
    assert job["status"] == "cancelling"  # a line is still running
    assert store.claim(job_id, "w", 5) == []
    store.complete(first, "w", ok=True, record='{"custom_id": "a"}')
    assert store.finish(job_id)
    job = store.job(job_id)
    assert job["status"] == "cancelled" and job["cancelled_at"] is not None
    codes = [r["error"]["code"] for r in _records(store, job["error_file_id"])]  # type: ignore[index]
    assert codes == ["batch_cancelled", "batch_cancelled"]


def test_off_peak_windows() -> None:
    at = dt.datetime(2026, 1, 1, 23, 30, tzinfo=dt.UTC)
    assert seconds_until_open([], at) == 0
    assert seconds_until_open(["22:00-06:00"], at) == 0  # wraps midnight
    assert seconds_until_open(["00:00-01:00"], at) == 30 * 60
    assert seconds_until_open(["09:00-17:00", "23:45-23:59"], at) == 15 * 60
    with pytest.raises(ValueError):
        BatchSettings(windows=("9-17",))


def test_a_job_past_its_window_expires_with_its_unrun_lines_in_the_error_file(
    store: SqliteJobStore,
) -> None:
    job_id = _job(store, [_line("a"), _line("b")])
    with store._tx() as cur:  # the completion window ran out before any worker came
        cur.execute("UPDATE flowopt_batch_jobs SET expires_at = 1 WHERE id = ?", (job_id,))
    fake = FakeExecutor()
    worker = BatchWorker(store, fake, BatchSettings(windows=("00:00-00:01",)))
    asyncio.run(worker.run_job(job_id))  # closed window: it must not wait for it to open
    job = store.job(job_id)
    assert job is not None and job["status"] == "expired" and job["expired_at"] is not None
    assert fake.runs == {}
    codes = [r["error"]["code"] for r in _records(store, job["error_file_id"])]  # type: ignore[index]
    assert codes == ["batch_expired", "batch_expired"]
