"""Builders of real stores for the distill tests: an embedded cache store (sqlite + faiss,
filled through the real cache middleware or with entries) and a sqlite batch store whose
jobs are closed the way a worker closes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowopt.batch import SqliteJobStore
from flowopt.batch._lines import output_record
from flowopt.cache._capture import CAPTURE_TAG
from flowopt.cache.stores.base import Entry
from flowopt.cache.stores.gptcache import GPTCacheStore

CHAT = "/v1/chat/completions"
SYSTEM = "You are the support desk. Answer in one sentence."


def entry(
    question: str,
    text: str,
    *,
    consent: bool = True,
    tenant: str = "acme",
    model: str = "qwen0.5b",
    created_at: float = 1_800_000_000.0,
    finish: str | None = "stop",
    context: list[dict[str, Any]] | None = None,
) -> Entry:
    """A cache entry as the middleware writes it (with consent: tag + context)."""
    response: dict[str, Any] = {"model": model, "finish_reason": finish, "usage": [3, 4]}
    if consent:
        response["context"] = (
            context if context is not None else [{"role": "system", "content": SYSTEM}]
        )
    return Entry(
        exact_key=f"k-{tenant}-{question}",
        partition="p",
        tenant=tenant,
        model_identity="id",
        question=question,
        text=text,
        response=response,
        tags=(CAPTURE_TAG,) if consent else (),
        created_at=created_at,
    )


def cache_dir(path: Path, entries: list[Entry]) -> Path:
    """An embedded cache store at ``path`` holding ``entries`` (closed again)."""
    store = GPTCacheStore(path)
    for e in entries:
        store.put(e)
    store.close()
    return path


def chat_body(text: str, model: str = "qwen0.5b", finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
            }
        ],
    }


def batch_job(
    store: SqliteJobStore,
    lines: list[tuple[str, str, dict[str, Any] | None]],
    *,
    metadata: dict[str, str] | None = None,
    tenant: str | None = "acme",
    status: int = 200,
) -> str:
    """A closed chat job: ``lines`` are (custom_id, user text, answer body or None for a
    failed line); each is claimed and completed by a worker, then the job is finished."""
    raw = "".join(
        json.dumps(
            {
                "custom_id": cid,
                "method": "POST",
                "url": CHAT,
                "body": {
                    "model": "qwen0.5b",
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": text},
                    ],
                },
            }
        )
        + "\n"
        for cid, text, _ in lines
    )
    f = store.put_file(raw.encode(), filename="in.jsonl", purpose="batch", tenant=tenant)
    job = store.create_job(input_file_id=f["id"], endpoint=CHAT, tenant=tenant, metadata=metadata)
    answers = {cid: body for cid, _, body in lines}
    store.register("w1")
    for claimed in store.claim(job["id"], "w1", 1000):
        body = answers[claimed.custom_id]
        ok = body is not None
        record = output_record(
            claimed.custom_id, status if ok else 500, body or {"error": "x"}, "req"
        )
        store.complete(claimed, "w1", ok=ok, record=record)
    assert store.finish(job["id"])
    return str(job["id"])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
