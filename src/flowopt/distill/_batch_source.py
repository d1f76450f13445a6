"""Training candidates from the batch job store: each closed chat job's input lines joined
with its output lines by ``custom_id``.

Why consent is per job: a batch is the tenant's own file, submitted for an answer and not
for training. A job's lines are used only when whoever submitted it said so in the batch's
metadata, ``{"distill": "allow"}`` (``client.batches.create(..., metadata=...)``, or
``flowopt batch run --metadata distill=allow``). A line is accepted when it got HTTP 200
with one choice that finished with ``stop`` and holds text, no tool call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flowopt.distill._messages import plain_messages
from flowopt.distill.errors import DistillError
from flowopt.distill.example import Example

__all__ = ["CONSENT_KEY", "CONSENT_VALUE", "line_example", "read_batch"]

CONSENT_KEY = "distill"
CONSENT_VALUE = "allow"


def _jsonl(data: bytes | None) -> Iterator[dict[str, Any]]:
    for raw in (data or b"").splitlines():
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


def line_example(
    body: dict[str, Any] | None, record: dict[str, Any], job: dict[str, Any]
) -> Example | str:
    """The example one output ``record`` makes with its request ``body``, or the reason
    it makes none."""
    response = record.get("response") or {}
    answer = response.get("body") if isinstance(response, dict) else None
    if not isinstance(answer, dict) or response.get("status_code") != 200:
        return "not_accepted"
    choices = answer.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        return "not_accepted"
    message = choices[0].get("message") or {}
    text = message.get("content") if isinstance(message, dict) else None
    if choices[0].get("finish_reason") != "stop" or message.get("tool_calls"):
        return "not_accepted"
    if not isinstance(text, str) or not text.strip():
        return "not_accepted"
    if body is None:
        return "no_request"
    messages = plain_messages(body.get("messages") or [])
    if messages is None:
        return "not_plain_chat"
    return Example(
        messages=messages,
        answer=text,
        source="batch",
        tenant=job.get("tenant"),
        model=str(answer.get("model") or body.get("model") or ""),
        created_at=float(job.get("completed_at") or job.get("created_at") or 0),
    )


def _open(where: str) -> Any:
    from flowopt.batch.store import open_store

    if not where.startswith(("postgresql://", "postgres://")):
        path = Path(where.removeprefix("sqlite:///")).expanduser()
        if not path.is_file():
            raise DistillError(
                f"no batch store at {str(path)!r}",
                hint="pass the file the spec's gateway.batch.store names (flowopt batch run "
                "--store), or batch:postgresql://... for the shared store",
            )
        where = str(path)
    return open_store(where)


def read_batch(where: str | None, since: float = 0.0) -> Iterator[Example | str]:
    """Every output line of the closed jobs created since ``since`` in the store at
    ``where`` (sqlite path or ``postgresql://`` URL; None: the default store)."""
    from flowopt._batch_spec import DEFAULT_STORE

    store = _open(where or DEFAULT_STORE)
    try:
        for job in store.closed_jobs(since):
            done = int(job["request_counts"]["completed"])
            if job["endpoint"] != "/v1/chat/completions":
                yield from ["not_chat"] * done
                continue
            if (job.get("metadata") or {}).get(CONSENT_KEY) != CONSENT_VALUE:
                yield from ["no_consent"] * done
                continue
            tenant = job.get("tenant")
            bodies = {
                str(line.get("custom_id")): line.get("body")
                for line in _jsonl(store.file_content(job["input_file_id"], tenant))
            }
            out_id = job.get("output_file_id")
            for record in _jsonl(store.file_content(out_id, tenant) if out_id else None):
                body = bodies.get(str(record.get("custom_id")))
                yield line_example(body if isinstance(body, dict) else None, record, job)
    finally:
        store.close()
