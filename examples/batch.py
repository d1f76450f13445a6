"""A batch job through flowopt's gateway with the official OpenAI client.

    FLOWOPT_BASE_URL=http://127.0.0.1:8000 python examples/batch.py

``FLOWOPT_BASE_URL`` is the vLLM server (start one with `flowopt backend up`). The script
starts a gateway in this process (as `flowopt serve` would), uploads a JSONL file of chat
requests with ``client.files.create(purpose="batch")``, creates the batch, waits for it and
prints the output and error files. One line is malformed on purpose: it lands in the error
file with its line number, and the other lines run.

From the shell, the same file runs with `flowopt batch run questions.jsonl --spec SPEC`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import openai

from flowopt import pipeline
from flowopt.batch import BatchSettings
from flowopt.gateway._background import BackgroundServer
from flowopt.gateway.app import create_app
from flowopt.spec import GatewaySpec

QUESTIONS = ["What is vLLM?", "Name a primary colour.", "What is 2 + 2?", "Say hello."]


def main() -> int:
    base_url = os.environ.get("FLOWOPT_BASE_URL", "http://127.0.0.1:8000")
    model = os.environ.get("FLOWOPT_MODEL", "smollm2")
    pipe = pipeline(
        "batch-example",
        backend={"vllm": {"base_url": base_url, "model": model}},
        middleware=[{"resilience": {"shed": {"max_concurrency": 8}}}],  # lines queue last
        steps=[{"name": "answer", "prompt": "{input}"}],
    )
    lines = [
        json.dumps(
            {
                "custom_id": f"q{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": model,
                    "max_tokens": 24,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": q}],
                },
            }
        )
        for i, q in enumerate(QUESTIONS)
    ]
    lines.insert(2, '{"custom_id": "broken", "url": ')  # malformed on purpose
    with tempfile.TemporaryDirectory() as tmp:
        settings = GatewaySpec(batch=BatchSettings(store=str(Path(tmp) / "jobs.sqlite")))
        with BackgroundServer(create_app(pipe, settings)) as server:
            client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="none")
            upload = client.files.create(
                file=("questions.jsonl", "\n".join(lines).encode()), purpose="batch"
            )
            batch = client.batches.create(
                input_file_id=upload.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            print(f"batch {batch.id}: {batch.status}")
            deadline = time.monotonic() + 300
            while batch.status not in ("completed", "failed", "cancelled", "expired"):
                if time.monotonic() > deadline:
                    print("the batch did not finish in 5 minutes", file=sys.stderr)
                    return 1
                time.sleep(0.5)
                batch = client.batches.retrieve(batch.id)
            print(f"batch {batch.id}: {batch.status}, {batch.request_counts}")
            assert batch.output_file_id and batch.error_file_id
            for raw in client.files.content(batch.output_file_id).text.splitlines():
                record = json.loads(raw)
                answer = record["response"]["body"]["choices"][0]["message"]["content"]
                print(f"{record['custom_id']}: {answer!r}")
            for raw in client.files.content(batch.error_file_id).text.splitlines():
                error = json.loads(raw)["error"]
                print(f"error on line {error['line']}: {error['message']}")
            if batch.usage is not None:
                print(
                    f"usage: {batch.usage.input_tokens} input + "
                    f"{batch.usage.output_tokens} output tokens"
                )
            ok = batch.request_counts is not None and batch.request_counts.completed == 4
            # the files are the only copy of the questions and answers: delete them when done
            for fid in (upload.id, batch.output_file_id, batch.error_file_id):
                ok = client.files.delete(fid).deleted and ok
            print(f"files left: {len(client.files.list().data)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
