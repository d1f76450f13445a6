"""Batch jobs: OpenAI Batch API files in, every line through the pipeline, output out.

- :mod:`flowopt.batch.store`: the durable state (sqlite, or Postgres for many machines);
- :mod:`flowopt.batch.worker`: claims lines, runs them concurrently at batch priority,
  commits each answer once;
- :func:`run_file`: what ``flowopt batch run FILE --spec SPEC`` does.

See docs/batch.md.
"""

from __future__ import annotations

from flowopt._batch_spec import BATCH_PRIORITY, BatchSettings
from flowopt.batch._local import run_file
from flowopt.batch.store import Claimed, JobStore, SqliteJobStore, open_store
from flowopt.batch.worker import BatchWorker, seconds_until_open

__all__ = [
    "BATCH_PRIORITY",
    "BatchSettings",
    "BatchWorker",
    "Claimed",
    "JobStore",
    "SqliteJobStore",
    "open_store",
    "run_file",
    "seconds_until_open",
]
