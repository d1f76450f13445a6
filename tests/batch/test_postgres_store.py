"""The batch store on a real (embedded) Postgres: many workers, one job, each line once.

``FakeExecutor`` (from the sqlite unit tests) stands in for the pipeline; the database,
its row locks and the two connections are real.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from tests.batch.test_store_unit import CHAT, FakeExecutor, _line

from flowopt.batch import BatchSettings, BatchWorker, Claimed, open_store
from flowopt.batch._execute import Outcome
from flowopt.batch._postgres import PostgresJobStore

pytestmark = pytest.mark.services


def _job(store: PostgresJobStore, n: int) -> str:
    data = ("\n".join(_line(f"c{i}") for i in range(n)) + "\n").encode()
    f = store.put_file(data, filename="in.jsonl", purpose="batch", tenant="t")
    return str(store.create_job(input_file_id=f["id"], endpoint=CHAT, tenant="t")["id"])


def test_claims_skip_rows_another_worker_holds(postgres_dsn: str) -> None:
    one, two = open_store(postgres_dsn), open_store(postgres_dsn)
    assert isinstance(one, PostgresJobStore) and isinstance(two, PostgresJobStore)
    job_id = _job(one, 6)
    with one._tx() as cur:  # worker one's claim is still open (rows locked)...
        held = [r[0] for r in one._claim_rows(cur, job_id, 3)]
        # ...and worker two takes the next lines without waiting for it
        taken = [c.number for c in two.claim(job_id, "w2", 3)]
    assert held == [1, 2, 3] and taken == [4, 5, 6]
    one.close()
    two.close()


class SlowFake(FakeExecutor):
    """Takes a little time per line so two workers' claims interleave."""

    async def __call__(self, line: Claimed) -> Outcome:
        await asyncio.sleep(0.005)
        return await super().__call__(line)


def test_two_workers_share_a_job_and_answer_each_line_once(postgres_dsn: str) -> None:
    stores = [open_store(postgres_dsn) for _ in range(2)]
    job_id = _job(stores[0], 40)  # type: ignore[arg-type]
    fakes = [SlowFake(), SlowFake()]
    settings = BatchSettings(concurrency=4)
    workers = [BatchWorker(s, f, settings) for s, f in zip(stores, fakes, strict=True)]

    async def run() -> None:
        try:
            await asyncio.gather(*(w.run_job(job_id) for w in workers))
        finally:
            for w in workers:
                await w.stop()

    asyncio.run(run())
    assert all(f.runs for f in fakes)  # both took lines
    ran = [cid for f in fakes for cid in f.runs]
    assert sorted(ran) == sorted(f"c{i}" for i in range(40))  # none ran twice
    job = stores[1].job(job_id, "t")
    assert job is not None and job["status"] == "completed"
    data = stores[1].file_content(job["output_file_id"], "t")
    assert data is not None
    ids = [json.loads(x)["custom_id"] for x in data.decode().splitlines()]
    assert ids == [f"c{i}" for i in range(40)]
    for s in stores:
        s.close()


def test_files_list_delete_usage_and_the_added_column(postgres_dsn: str) -> None:
    store = open_store(postgres_dsn)
    assert isinstance(store, PostgresJobStore)
    with store._tx() as cur:  # a store made before usage_totals existed
        cur.execute("ALTER TABLE flowopt_batch_jobs DROP COLUMN usage_totals")
    store.close()
    store = open_store(postgres_dsn)  # opening adds it back
    job_id = _job(store, 2)  # type: ignore[arg-type]
    store.register("w")
    for line in store.claim(job_id, "w", 5):
        usage = {"prompt_tokens": 5, "completion_tokens": 2}
        body = {"custom_id": line.custom_id, "response": {"body": {"usage": usage}}}
        store.complete(line, "w", ok=True, record=json.dumps(body))
    assert store.finish(job_id)
    job = store.job(job_id, "t")
    assert job is not None and job["usage"]["input_tokens"] == 10
    assert job["usage"]["output_tokens"] == 4 and job["usage"]["total_tokens"] == 14
    mine = {f["id"] for f in store.files("t", purpose="batch_output")}
    assert job["output_file_id"] in mine
    page = store.files("t", limit=1)
    assert len(page) == 1 and store.files("t", after=page[0]["id"], limit=1) != page
    assert not store.delete_file(job["output_file_id"], "someone-else")
    assert store.delete_file(job["output_file_id"], "t")
    assert store.file_content(job["output_file_id"], "t") is None
    store.close()
