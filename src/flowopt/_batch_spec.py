"""The ``gateway.batch:`` section of a spec: where batch jobs live and how hard they push.

Kept apart from the gateway's connection limits because it configures a different kind of
work: requests nobody is waiting on, which must yield to interactive traffic (lowest
priority, bounded concurrency, optional off-peak windows) and must survive restarts (a
durable store). ``flowopt batch run`` reads the same section.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["BATCH_PRIORITY", "DEFAULT_STORE", "BatchSettings"]

BATCH_PRIORITY = -100
"""Request priority of batch lines: below every interactive request (default 0), so the
load shedder (``shed``) serves them last and drops them first."""
DEFAULT_STORE = "~/.cache/flowopt/batch.sqlite"
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$")


class BatchSettings(BaseModel):
    """Batch jobs: the store, the push and the hours (``gateway.batch`` in a spec)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    store: str = Field(
        default=DEFAULT_STORE,
        description="Where files, jobs and lines live: a sqlite file path (one machine; "
        "several workers on it are fine) or a postgresql:// URL (many machines).",
    )
    concurrency: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Lines in flight per worker: enough to keep vLLM's continuous batching "
        "full; keep it below the shedder's max_concurrency so interactive requests find "
        "a free slot.",
    )
    priority: int = Field(
        default=BATCH_PRIORITY,
        description="Request priority of batch lines (interactive requests have 0): the "
        "shedder queues them behind, and sheds them before, any interactive request.",
    )
    max_attempts: int = Field(
        default=4,
        ge=1,
        description="Tries of a line that fails transiently (5xx, timeout, 429) before it "
        "goes to the error file; a shed line waits and retries without counting.",
    )
    lease_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds without a heartbeat after which a worker's claimed lines go "
        "back to the others (a worker on the same host whose process is gone frees them "
        "at once).",
    )
    windows: tuple[str, ...] = Field(
        default=(),
        description="Off-peak windows ('HH:MM-HH:MM', UTC; '22:00-06:00' wraps midnight) "
        "in which workers take new lines; empty means any time.",
    )
    max_file_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=1,
        description="Largest file POST /v1/files accepts (OpenAI's limit for batch input).",
    )

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for w in v:
            if not _WINDOW.match(w):
                raise ValueError(f"window {w!r} is not 'HH:MM-HH:MM' (UTC, 24-hour clock)")
        return v
