"""The extraction queue on its own (real sqlite, a recording processor): persisted across
a restart, debounced per conversation, bounded, and a failing processor never kills it."""

from __future__ import annotations

import threading
from pathlib import Path

from flowopt.memory._queue import ExtractionJob, ExtractionQueue


def test_rows_survive_a_restart_and_are_processed_then(tmp_path: Path) -> None:
    seen: list[ExtractionJob] = []
    q = ExtractionQueue(tmp_path / "q.db", seen.append, debounce_s=0)
    q.pause()
    q.start()
    assert q.put("conv-a", {"turn": 1})
    assert q.stats().pending == 1
    q.close()  # "crash": nothing processed
    assert seen == []
    q2 = ExtractionQueue(tmp_path / "q.db", seen.append, debounce_s=0)
    assert q2.drain(timeout=30)
    q2.close()
    assert [j.payloads for j in seen] == [[{"turn": 1}]]


def test_a_burst_of_turns_is_extracted_once(tmp_path: Path) -> None:
    seen: list[ExtractionJob] = []
    q = ExtractionQueue(tmp_path / "q.db", seen.append, debounce_s=3600)
    q.start()
    for i in range(5):
        q.put("conv-a", {"turn": i})
    q.put("conv-b", {"turn": 0})
    assert q.stats().processed == 0  # still within the debounce window
    assert q.drain(timeout=30)
    q.close()
    by_conv = {j.conv: [p["turn"] for p in j.payloads] for j in seen}
    assert by_conv == {"conv-a": [0, 1, 2, 3, 4], "conv-b": [0]}
    assert len(seen) == 2


def test_full_queue_sheds_new_turns(tmp_path: Path) -> None:
    q = ExtractionQueue(tmp_path / "q.db", lambda job: None, max_pending=2)
    assert q.put("c", {"n": 1}) and q.put("c", {"n": 2})
    assert not q.put("c", {"n": 3})
    assert q.stats().shed == 1 and q.stats().pending == 2
    q.close()


def test_a_failing_processor_is_retried_then_dropped(tmp_path: Path) -> None:
    calls = []

    def boom(job: ExtractionJob) -> None:
        calls.append(job)
        raise RuntimeError("llm down")

    q = ExtractionQueue(tmp_path / "q.db", boom, debounce_s=0, max_attempts=2)
    q.put("c", {"n": 1})
    assert q.drain(timeout=30)
    stats = q.stats()
    q.close()
    assert len(calls) == 2 and stats.failed == 1 and stats.pending == 0


def test_processing_happens_in_the_worker_not_the_caller(tmp_path: Path) -> None:
    started = threading.Event()
    release = threading.Event()
    threads: list[str] = []

    def slow(job: ExtractionJob) -> None:
        threads.append(threading.current_thread().name)
        started.set()
        release.wait()

    q = ExtractionQueue(tmp_path / "q.db", slow, debounce_s=0)
    q.start()
    assert q.put("c", {"n": 1})  # returns while the processor is blocked
    assert started.wait(30)
    assert q.stats().pending == 1  # acknowledged, still on disk until processed
    release.set()
    assert q.drain(timeout=30)
    q.close()
    assert threads == ["flowopt-memory-extract"]
