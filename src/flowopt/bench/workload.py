"""Prompts for a benchmark: a JSONL file, or the built-in FAQ-shaped workload.

The built-in workload is what an FAQ/support deployment sees: a few questions are asked
very often, most rarely (Zipf popularity over intents), and each intent arrives in
different words (paraphrases from QQP duplicate pairs; ``scripts/build_faq_workload.py``
builds the packaged file). That mix is what caches and prefix caching meet in production;
uniformly random prompts would flatter no optimisation and hide the ones that help.

A JSONL prompt file holds one object a line with ``prompt`` (or ``question``/``text``)
text, or ``messages`` (OpenAI chat messages). Sampling is seeded: the same seed gives the
same sequence, so two targets (or two ablation variants) get identical work.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from flowopt.errors import ConfigError

__all__ = ["Prompt", "Workload", "faq_workload", "jsonl_workload"]


@dataclass(frozen=True, slots=True)
class Prompt:
    """One request's content: chat messages, plus the intent id when known."""

    messages: tuple[dict[str, str], ...]
    intent: int | None = None

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]


class Workload:
    """An endless, seeded sampler of prompts."""

    def __init__(
        self,
        name: str,
        pool: Sequence[Sequence[Prompt]],
        *,
        zipf_s: float = 0.0,
        seed: int = 0,
        system: str | None = None,
    ) -> None:
        if not pool or not all(pool):
            raise ConfigError(f"workload {name!r} has no prompts", hint="check the prompt file")
        self.name = name
        self._pool = [list(p) for p in pool]
        self._rng = random.Random(seed)
        self._system = system
        self.zipf_s = zipf_s
        weights = [1.0 / (rank + 1) ** zipf_s for rank in range(len(self._pool))]
        total = sum(weights)
        self._cum: list[float] = []
        acc = 0.0
        for w in weights:
            acc += w / total
            self._cum.append(acc)

    def __len__(self) -> int:
        return sum(len(p) for p in self._pool)

    def sample(self) -> Prompt:
        import bisect

        group = self._pool[
            min(bisect.bisect_left(self._cum, self._rng.random()), len(self._pool) - 1)
        ]
        prompt = group[self._rng.randrange(len(group))]
        if self._system:
            return Prompt(
                ({"role": "system", "content": self._system}, *prompt.messages), prompt.intent
            )
        return prompt

    def take(self, n: int) -> list[Prompt]:
        return [self.sample() for _ in range(n)]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "groups": len(self._pool),
            "prompts": len(self),
            "zipf_s": self.zipf_s,
            "system_prompt": bool(self._system),
        }


def faq_workload(
    *, zipf_s: float = 1.1, seed: int = 0, system: str | None = None, intents: int | None = None
) -> Workload:
    """The packaged FAQ workload: intents ranked by Zipf(``zipf_s``), random paraphrase."""
    ref = resources.files("flowopt") / "data" / "faq_workload.jsonl"
    groups: list[list[Prompt]] = []
    with ref.open("r", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            groups.append(
                [
                    Prompt(({"role": "user", "content": q},), int(row["id"]))
                    for q in row["questions"]
                ]
            )
    if intents is not None:
        groups = groups[:intents]
    return Workload("faq", groups, zipf_s=zipf_s, seed=seed, system=system)


def _prompt_from(row: Any, where: str) -> Prompt:
    if isinstance(row, dict):
        if isinstance(row.get("messages"), list):
            msgs = tuple(
                {"role": str(m["role"]), "content": str(m["content"])} for m in row["messages"]
            )
            return Prompt(msgs)
        for key in ("prompt", "question", "text"):
            if isinstance(row.get(key), str):
                return Prompt(({"role": "user", "content": row[key]},))
    if isinstance(row, str):
        return Prompt(({"role": "user", "content": row},))
    raise ConfigError(
        f"{where}: no 'prompt', 'question', 'text' or 'messages'",
        hint='write one object a line, e.g. {"prompt": "..."}',
    )


def jsonl_workload(path: str | Path, *, seed: int = 0, system: str | None = None) -> Workload:
    """Prompts from a JSONL file, sampled uniformly."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"no such prompt file: {p}", hint="pass a JSONL file or 'faq'")
    prompts = []
    with p.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    raise ConfigError(f"{p}:{i}: not JSON", hint="one JSON object a line") from None
                prompts.append([_prompt_from(row, f"{p}:{i}")])
    return Workload(p.stem, prompts, zipf_s=0.0, seed=seed, system=system)
