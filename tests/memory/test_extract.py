"""Parsing the extractor's reply and rendering the recall block (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from flowopt.errors import ConfigError
from flowopt.memory import MemoryKey, Recalled, render_block
from flowopt.memory.extract import SYSTEM_PROMPT, Turn, attribute, build_messages, parse_facts


@pytest.mark.parametrize(
    ("raw", "facts"),
    [
        ('{"facts": ["User has a dog named Rex."]}', ["User has a dog named Rex."]),
        ('```json\n{"facts": ["A b c d"]}\n```', ["A b c d"]),
        ('{"facts": [{"fact": "User lives in Leeds."}]}', ["User lives in Leeds."]),
        ('Sure! {"facts": []}', []),
        ("not json at all", []),
        ('{"facts": "oops"}', []),
        ('["User likes tea.", "User likes tea."]', ["User likes tea."]),
    ],
)
def test_parse_facts(raw: str, facts: list[str]) -> None:
    assert parse_facts(raw) == facts


def test_static_prompt_comes_first_and_turns_last() -> None:
    msgs = build_messages([Turn("t1", "user", "I have a cat.", "2026-01-01")])
    assert msgs[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert msgs[1]["content"].endswith("user: I have a cat.")
    assert len(SYSTEM_PROMPT) < 1400  # ~300 tokens, against Mem0's ~7,700


def test_attribution_picks_the_closest_turn() -> None:
    table = {"fact-a": [1.0, 0.0], "fact-b": [0.0, 1.0], "turn a": [0.9, 0.1], "turn b": [0.1, 0.9]}

    def embed(texts: list[str]) -> np.ndarray:
        v = np.array([table[t] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    turns = [Turn("t1", "user", "turn a"), Turn("t2", "user", "turn b")]
    assert attribute(["fact-a", "fact-b"], turns, embed) == [["t1"], ["t2"]]


def test_block_respects_its_token_budget() -> None:
    mems = [
        Recalled(str(i), f"User fact number {i} is here.", 0.9, (), None, None) for i in range(50)
    ]
    text, kept, tokens = render_block(mems, 60)
    assert text.startswith("<memory>") and text.endswith("</memory>")
    assert 0 < kept < 50 and tokens <= 60
    assert render_block(mems, 5) == ("", 0, 0)


def test_keys_always_carry_the_tenant() -> None:
    assert MemoryKey("acme", user="alice").mem0_ids() == {"user_id": "acme/alice"}
    assert MemoryKey("acme", user="a", run="r1").mem0_ids() == {
        "user_id": "acme/a",
        "run_id": "acme/r1",
    }
    with pytest.raises(ConfigError):
        MemoryKey("acme")
    with pytest.raises(ConfigError):
        MemoryKey("ac/me", user="alice")
