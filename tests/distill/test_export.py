"""``flowopt.distill.export`` on real sqlite stores built here: consent, acceptance,
filters, personal data, deduplication, the split, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from distill_stores import SYSTEM, batch_job, cache_dir, chat_body, entry, read_jsonl

from flowopt.batch import SqliteJobStore
from flowopt.distill import DistillError, NothingToExportError, export, holdout_side, prompt_key
from flowopt.distill._since import parse_since

T0 = 1_800_000_000.0


def _cache(tmp_path: Path, entries: list) -> str:  # type: ignore[type-arg]
    return "cache:" + str(cache_dir(tmp_path / "cache", entries))


def test_cache_keeps_only_consented_accepted_plain_chat(tmp_path: Path) -> None:
    src = _cache(
        tmp_path,
        [
            entry("How do I reset my password?", "Use the reset link."),
            entry("Where is my parcel?", "Track it online.", consent=False),
            entry("Why was I charged twice?", "A hold.", finish="length"),
            entry(
                "And after that?",
                "Call us.",
                context=[{"role": "tool", "content": "x", "tool_call_id": "c"}],
            ),
        ],
    )
    out = tmp_path / "train.jsonl"
    report = export(out, since=0, sources=[src], holdout=0.0)
    assert (report.train, report.holdout, report.read) == (1, 0, 4)
    assert report.dropped == {"no_consent": 1, "not_accepted": 1, "not_plain_chat": 1}
    assert read_jsonl(out) == [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "How do I reset my password?"},
                {"role": "assistant", "content": "Use the reset link."},
            ]
        }
    ]
    assert not (tmp_path / "train.holdout.jsonl").exists()


def test_batch_needs_the_jobs_consent_and_a_stopped_answer(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "batch.sqlite")
    batch_job(
        store,
        [
            ("a", "How do I close my account?", chat_body("From settings.")),
            ("b", "Can I change my PIN?", chat_body("Yes, at any ATM.", finish="length")),
            ("c", "Is there a fee?", None),  # failed line: in the error file only
        ],
        metadata={"distill": "allow"},
    )
    batch_job(store, [("d", "What is my limit?", chat_body("1000 a day."))])  # no consent
    store.close()
    out = tmp_path / "t.jsonl"
    report = export(out, since=0, sources=["batch:" + str(tmp_path / "batch.sqlite")], holdout=0)
    assert report.train == 1
    assert report.dropped == {"no_consent": 1, "not_accepted": 1}
    (line,) = read_jsonl(out)
    assert line["messages"][1:] == [
        {"role": "user", "content": "How do I close my account?"},
        {"role": "assistant", "content": "From settings."},
    ]


def test_filters_tenant_model_since_and_pii(tmp_path: Path) -> None:
    src = _cache(
        tmp_path,
        [
            entry("q1 keep", "a1", created_at=T0 + 10),
            entry("q2 old", "a2", created_at=T0 - 10),
            entry("q3 other tenant", "a3", created_at=T0 + 10, tenant="globex"),
            entry("q4 weak model", "a4", created_at=T0 + 10, model="smollm2"),
            entry("q5 mail me at jane.doe@example.com", "ok", created_at=T0 + 10),
            entry("q6 my card?", "It ends 4111 1111 1111 1111.", created_at=T0 + 10),
            entry("q7 employee EMP-123456 asks", "ok", created_at=T0 + 10),
        ],
    )
    report = export(
        tmp_path / "t.jsonl",
        since=T0,
        sources=[src],
        holdout=0,
        tenants=["acme"],
        models=["qwen0.5b"],
        pii_patterns={"employee_id": r"EMP-\d{6}"},
    )
    assert report.train == 1
    assert report.dropped == {"too_old": 1, "other_tenant": 1, "other_model": 1, "pii": 3}


def test_duplicates_by_normalised_prompt_keep_the_newest(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "b.sqlite")
    batch_job(
        store,
        [("x", "How do I RESET my  password?", chat_body("old"))],
        metadata={"distill": "allow"},
    )
    store.close()
    src = _cache(tmp_path, [entry("how do i reset my password", "new", created_at=4e9)])
    out = tmp_path / "t.jsonl"
    report = export(out, since=0, sources=[src, "batch:" + str(tmp_path / "b.sqlite")], holdout=0)
    assert (report.train, report.dropped) == (1, {"duplicate": 1})
    assert read_jsonl(out)[0]["messages"][-1]["content"] == "new"


def test_split_is_a_stable_hash_of_the_prompt(tmp_path: Path) -> None:
    entries = [entry(f"question number {i}?", f"answer {i}", created_at=T0 + i) for i in range(60)]
    src = _cache(tmp_path, entries)
    out = tmp_path / "train.jsonl"
    report = export(out, since=0, sources=[src], holdout=0.25)
    held = read_jsonl(tmp_path / "train.holdout.jsonl")
    train = read_jsonl(out)
    assert report.train + report.holdout == 60 == len(held) + len(train)
    assert 5 <= len(held) <= 25  # about a quarter of 60 distinct prompts
    for line, side in [(x, True) for x in held] + [(x, False) for x in train]:
        assert holdout_side(prompt_key(line["messages"][:-1]), 0.25) is side
    users = {x["messages"][1]["content"] for x in held}
    assert not users & {x["messages"][1]["content"] for x in train}
    # a second export (into other files) puts every prompt on the same side again
    again = export(tmp_path / "b.jsonl", since=0, sources=[src], holdout=0.25)
    assert again.holdout == report.holdout
    assert read_jsonl(tmp_path / "b.holdout.jsonl") == held
    # the key ignores case, spacing and trailing punctuation, not the words
    a = ({"role": "user", "content": "Reset  my password?"},)
    assert prompt_key(a) == prompt_key(({"role": "user", "content": "reset my password"},))
    assert prompt_key(a) != prompt_key(({"role": "user", "content": "reset my pin"},))


def test_errors_are_typed_and_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DistillError, match="neither a date nor an age") as bad:
        parse_since("last tuesday")
    assert "7d" in (bad.value.hint or "")
    with pytest.raises(DistillError, match="in the future"):
        parse_since("2999-01-01")
    assert parse_since("7d", now=1_000_000.0) == 1_000_000.0 - 7 * 86400
    assert parse_since("2026-12-01") == parse_since("2026-12-01T00:00:00Z")
    with pytest.raises(DistillError, match="no cache store at"):
        export(tmp_path / "t.jsonl", since=0, sources=["cache:" + str(tmp_path / "nope")])
    with pytest.raises(DistillError, match="no batch store at"):
        export(tmp_path / "t.jsonl", since=0, sources=["batch:" + str(tmp_path / "x.sqlite")])
    with pytest.raises(DistillError, match="unknown source"):
        export(tmp_path / "t.jsonl", since=0, sources=["traces"])
    with pytest.raises(DistillError, match="--holdout"):
        export(tmp_path / "t.jsonl", since=0, sources=["cache"], holdout=1.0)
    src = _cache(tmp_path, [entry("q", "a", consent=False)])
    with pytest.raises(NothingToExportError, match="no_consent 1") as empty:
        export(tmp_path / "t.jsonl", since=0, sources=[src])
    assert "capture_content" in (empty.value.hint or "")
    assert not (tmp_path / "t.jsonl").exists()
