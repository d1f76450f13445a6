"""``flowopt memory list|search|forget|eval`` on a real embedded store (Mem0 + qdrant)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from flowopt.cli import cli
from flowopt.memory import LongTermStore, MemoryKey


def _seed(data_dir: Path) -> None:
    store = LongTermStore(data_dir, llm_base_url=None, llm_model=None)
    store.add_facts(
        MemoryKey("acme", user="alice"),
        ["User has a beagle named Biscuit.", "User lives in Bristol."],
        sources=["turn-7"],
        at="2026-04-10",
    )
    store.add_facts(MemoryKey("acme", user="bob"), ["User plays chess."], sources=["b"], at="x")
    store.close()


def test_list_search_and_forget(tmp_path: Path) -> None:
    _seed(tmp_path)
    run = CliRunner().invoke
    base = ["--tenant", "acme", "--user", "alice", "--data-dir", str(tmp_path)]
    listed = run(cli, ["memory", "list", *base, "--json"])
    assert listed.exit_code == 0, listed.output
    items = json.loads(listed.output)
    assert {i["memory"] for i in items} == {
        "User has a beagle named Biscuit.",
        "User lives in Bristol.",
    }
    assert all(i["sources"] == ["turn-7"] and i["scope"] == "user_id=acme/alice" for i in items)

    found = run(cli, ["memory", "search", *base, "what is my dog called", "--k", "1", "--json"])
    assert found.exit_code == 0, found.output
    assert [i["memory"] for i in json.loads(found.output)] == ["User has a beagle named Biscuit."]

    gone = run(cli, ["memory", "forget", *base, "--yes"])
    assert gone.exit_code == 0, gone.output
    assert "forgot 2 memories; 0 left in the vector store, 0 history rows left" in gone.output
    bob = run(
        cli, ["memory", "list", "--tenant", "acme", "--user", "bob", "--data-dir", str(tmp_path)]
    )
    assert "User plays chess." in bob.output


def test_eval_refuses_a_bad_file_with_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "c1", "sessions": []}\n')
    out = CliRunner().invoke(cli, ["memory", "eval", str(bad)])
    assert out.exit_code == 2
    assert "bad.jsonl:1: conversation has no 'questions'" in out.output
