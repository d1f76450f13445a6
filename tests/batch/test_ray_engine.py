"""``flowopt batch run --engine ray``: the lines as a Ray dataset on a local Ray cluster
(``ray.init(num_cpus=2)``), two Ray actors each with the pipeline, against the real vLLM
server; the output has every ``custom_id`` exactly once and the malformed line is in the
error file. Needs the ``ray`` extra."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import ray

from flowopt.batch import open_store, run_file

pytestmark = pytest.mark.integration


def test_ray_engine_answers_each_line_once(
    tmp_path: Path, vllm_url: str, served_model: str
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: batch\n"
        f"backend: {{vllm: {{base_url: '{vllm_url}', model: {served_model}}}}}\n"
        "steps: [{name: answer, prompt: '{input}'}]\n"
        "gateway: {batch: {concurrency: 4}}\n"
    )
    lines = [
        json.dumps(
            {
                "custom_id": f"r-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": served_model,
                    "max_tokens": 4,
                    "messages": [{"role": "user", "content": f"Say {i}."}],
                },
            }
        )
        for i in range(20)
    ]
    lines.insert(4, "[1, 2]")
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out, err, db = tmp_path / "out.jsonl", tmp_path / "err.jsonl", tmp_path / "jobs.sqlite"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        job = asyncio.run(
            run_file(spec, src, out=out, errors=err, store=str(db), engine="ray", ray_actors=2)
        )
    finally:
        ray.shutdown()
    assert job["status"] == "completed"
    ids = [json.loads(x)["custom_id"] for x in out.read_text().splitlines()]
    assert ids == [f"r-{i}" for i in range(20)]  # once each, in input order
    (error,) = [json.loads(x) for x in err.read_text().splitlines()]
    assert error["error"]["line"] == 5
    store = open_store(db)
    assert store.counts(job["id"]) == {"done": 20, "invalid": 1}
    store.close()
