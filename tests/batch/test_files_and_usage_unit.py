"""The batch store's file list and delete, a closed batch's ``usage`` totals, and a store
made before the ``usage_totals`` column (sqlite; the Postgres store runs the same SQL in
tests/batch/test_postgres_store.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from tests.batch.test_store_unit import CHAT, _job, _line

from flowopt.batch import SqliteJobStore
from flowopt.batch._base import SCHEMA
from flowopt.errors import InvalidRequestError


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobStore:
    return SqliteJobStore(tmp_path / "jobs.sqlite")


def _put(store: SqliteJobStore, name: str, tenant: str | None = None) -> str:
    return str(store.put_file(b"{}\n", filename=name, purpose="batch", tenant=tenant)["id"])


def _answer(cid: str, prompt: int, completion: int, cached: int = 0) -> str:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    body = {"object": "chat.completion", "usage": usage}
    return json.dumps({"custom_id": cid, "response": {"status_code": 200, "body": body}})


def test_files_list_newest_first_pages_and_stays_in_the_tenant(store: SqliteJobStore) -> None:
    ids = [_put(store, f"f{i}.jsonl") for i in range(3)]
    theirs = _put(store, "other.jsonl", tenant="globex")
    listed = [f["id"] for f in store.files(None)]
    assert sorted(listed) == sorted(ids) and theirs not in listed
    newest_first = store.files(None, limit=2)
    rest = store.files(None, after=newest_first[-1]["id"])
    assert [f["id"] for f in newest_first + rest] == listed
    oldest_first = [f["id"] for f in store.files(None, ascending=True)]
    assert oldest_first == listed[::-1]
    assert store.files(None, purpose="batch_output") == []
    assert [f["id"] for f in store.files("globex")] == [theirs]


def test_delete_removes_a_file_for_its_tenant_only(store: SqliteJobStore) -> None:
    fid = _put(store, "mine.jsonl", tenant="acme")
    assert not store.delete_file(fid, "globex")  # another tenant: as if it did not exist
    assert store.file_content(fid, "acme") == b"{}\n"
    assert store.delete_file(fid, "acme")
    assert store.file_info(fid, "acme") is None and store.file_content(fid, "acme") is None
    assert not store.delete_file(fid, "acme")


def test_a_closed_batch_adds_up_usage_and_its_files_are_its_only_copy(
    store: SqliteJobStore,
) -> None:
    job_id = _job(store, [_line("a"), _line("b"), "not json"])
    assert store.job(job_id)["usage"] is None  # type: ignore[index]
    store.register("w")
    a, b = store.claim(job_id, "w", 5)
    store.complete(a, "w", ok=True, record=_answer("a", 10, 3, cached=4))
    store.complete(b, "w", ok=True, record=_answer("b", 7, 2))
    assert store.finish(job_id)
    job = store.job(job_id)
    assert job is not None and job["usage"] == {
        "input_tokens": 17,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 22,
    }
    with store._tx() as cur:  # the per-line copies went when the files were written
        kept = cur.execute(
            "SELECT COUNT(*) FROM flowopt_batch_lines WHERE job_id = ? AND "
            "(record IS NOT NULL OR body IS NOT NULL)",
            (job_id,),
        ).fetchone()[0]
    assert kept == 0
    for fid in (job["output_file_id"], job["error_file_id"], job["input_file_id"]):
        assert store.delete_file(fid, None)
    after = store.job(job_id)
    assert after is not None and after["status"] == "completed"  # the batch object stays
    assert after["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    assert store.file_content(job["output_file_id"], None) is None


def test_a_store_made_before_usage_totals_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    for stmt in SCHEMA:  # the first version of the jobs table had no usage_totals
        conn.execute(stmt.format(blob="BLOB").replace(", usage_totals TEXT", ""))
    conn.commit()
    conn.close()
    store = SqliteJobStore(path)
    job_id = _job(store, [_line("a")])
    job = store.job(job_id)
    assert job is not None and job["endpoint"] == CHAT and job["usage"] is None
    SqliteJobStore(path).close()  # opening again finds the column there


def test_a_cursor_that_names_nothing_of_this_tenants_is_an_error(store: SqliteJobStore) -> None:
    mine = [_put(store, f"f{i}.jsonl") for i in range(2)]
    theirs = _put(store, "other.jsonl", tenant="globex")
    store.delete_file(mine[0], None)
    # neither a deleted file nor another tenant's reads as "the end of the list"
    for cursor in (mine[0], theirs, "file-never"):
        with pytest.raises(InvalidRequestError) as err:
            store.files(None, after=cursor)
        assert err.value.param == "after"
    job = _job(store, [_line("a")], tenant="globex")
    with pytest.raises(InvalidRequestError):
        store.jobs(None, after=job)


def test_odd_usage_details_do_not_stop_a_batch_closing(store: SqliteJobStore) -> None:
    job_id = _job(store, [_line("a")])
    store.register("w")
    (a,) = store.claim(job_id, "w", 1)
    usage = {"prompt_tokens": 3, "completion_tokens": True, "prompt_tokens_details": "n/a"}
    record = {"custom_id": "a", "response": {"body": {"usage": usage}}}
    store.complete(a, "w", ok=True, record=json.dumps(record))
    assert store.finish(job_id)
    job = store.job(job_id)
    assert job is not None and job["status"] == "completed"
    assert job["usage"]["input_tokens"] == 3 and job["usage"]["output_tokens"] == 0


def test_a_batch_that_fails_at_creation_keeps_no_line_records(store: SqliteJobStore) -> None:
    job_id = _job(store, ["not json", '{"custom_id": "x"}'])
    job = store.job(job_id)
    assert job is not None and job["status"] == "failed" and job["errors"]["data"]
    with store._tx() as cur:
        kept = cur.execute(
            "SELECT COUNT(*) FROM flowopt_batch_lines WHERE job_id = ? AND record IS NOT NULL",
            (job_id,),
        ).fetchone()[0]
    assert kept == 0
