"""The student trainer needs the ``distill`` extra, and says so when it is missing. (The
training itself runs in CI through ``examples/distill_recipe.py``, tiny settings, against
the real teacher: see tests/integration/test_examples.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flowopt.distill.lora import load_jsonl, load_student
from flowopt.errors import MissingDependencyError


def test_missing_peft_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    with pytest.raises(MissingDependencyError) as err:
        load_student("/nonexistent")
    assert "flowopt[distill]" in str(err.value) and "peft" in str(err.value)


def test_load_jsonl_reads_the_export_format(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
        "\n\n"
    )
    assert load_jsonl(path) == [
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    ]
