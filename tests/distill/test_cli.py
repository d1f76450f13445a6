"""``flowopt distill export`` from the command line: output, report and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from distill_stores import cache_dir, entry

from flowopt.cli import cli


def test_export_writes_both_files_and_reports(tmp_path: Path) -> None:
    src = cache_dir(tmp_path / "c", [entry(f"question {i}", f"answer {i}") for i in range(20)])
    out = tmp_path / "train.jsonl"
    res = CliRunner().invoke(
        cli,
        [
            "distill",
            "export",
            "--since",
            "2020-01-01",
            "--out",
            str(out),
            "--source",
            f"cache:{src}",
            "--holdout",
            "0.3",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["train"] + report["holdout"] == 20 and report["holdout"] > 0
    assert len(out.read_text().splitlines()) == report["train"]
    held = Path(report["holdout_path"])
    assert held == tmp_path / "train.holdout.jsonl"
    assert len(held.read_text().splitlines()) == report["holdout"]


def test_bad_input_exits_2_with_the_reason(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        cli, ["distill", "export", "--since", "soon", "--out", str(tmp_path / "t.jsonl")]
    )
    assert res.exit_code == 2 and "neither a date nor an age" in res.output
    res = runner.invoke(
        cli,
        [
            "distill",
            "export",
            "--since",
            "7d",
            "--out",
            str(tmp_path / "t.jsonl"),
            "--source",
            f"batch:{tmp_path / 'missing.sqlite'}",
        ],
    )
    assert res.exit_code == 2 and "no batch store at" in res.output
