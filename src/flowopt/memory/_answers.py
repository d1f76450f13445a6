"""Answer accuracy for ``flowopt memory eval --answers``: the question answered with
recalled memories (through the middleware) and with the full history in the prompt, each
judged by the local model with :data:`JUDGE_PROMPT` (published here and in docs/memory.md)
and by a lexical check (every content word of the gold answer appears in the reply).

Why both judges: benchmark scores swing by tens of points with the judge prompt, so the
prompt is fixed and shown, and a judge-free number sits beside it.
"""

from __future__ import annotations

import re
from typing import Any

from flowopt.backends.vllm import VLLMBackend
from flowopt.memory.middleware import MemoryMiddleware
from flowopt.types import Request

__all__ = ["ANSWER_SYSTEM", "JUDGE_PROMPT", "answer_and_judge", "lexical_match"]

ANSWER_SYSTEM = "Answer the question about the user in a few words. If you do not know, say so."
JUDGE_PROMPT = (
    "Question: {question}\nGold answer: {gold}\nCandidate answer: {candidate}\n"
    "Does the candidate answer state the same thing as the gold answer? Answer yes or no."
)
_STOP = {"a", "an", "the", "of", "in", "on", "at", "to", "and", "or", "is", "for", "with", "s"}


def lexical_match(gold: str, candidate: str) -> bool:
    words = [w for w in re.findall(r"[a-z0-9]+", gold.lower()) if w not in _STOP]
    cand = set(re.findall(r"[a-z0-9]+", candidate.lower()))
    return bool(words) and all(w in cand for w in words)


def _history(conv: dict[str, Any], max_chars: int) -> str:
    lines = [
        f"[{s.get('date', '')}] {t['speaker']}: {t['text']}"
        for s in conv["sessions"]
        for t in s.get("turns", [])
    ]
    text = "\n".join(lines)
    return text[-max_chars:]  # the window keeps the most recent part


async def answer_and_judge(
    mw: MemoryMiddleware,
    backend: VLLMBackend,
    conv: dict[str, Any],
    q: dict[str, Any],
    user: str,
    *,
    window_chars: int,
) -> dict[str, Any]:
    """One question: the memory answer, the full-history answer, and both judged."""
    params = {"temperature": 0, "max_tokens": 32}
    with_memory = await mw(
        Request.chat(
            [
                {"role": "system", "content": ANSWER_SYSTEM},
                {"role": "user", "content": q["question"]},
            ],
            tenant="eval",
            user=user,
            params=params,
            metadata={"memory.extract": False},
        ),
        backend.generate,
    )
    history = _history(conv, window_chars)
    full = await backend.generate(
        Request.chat(
            [
                {"role": "system", "content": f"{ANSWER_SYSTEM}\nConversation so far:\n{history}"},
                {"role": "user", "content": q["question"]},
            ],
            params=params,
        )
    )
    out: dict[str, Any] = {}
    for name, reply in (("memory", with_memory.text), ("full_history", full.text)):
        judged = await backend.generate(
            Request.chat(
                [
                    {
                        "role": "user",
                        "content": JUDGE_PROMPT.format(
                            question=q["question"], gold=q["answer"], candidate=reply.strip()
                        ),
                    }
                ],
                params={
                    "temperature": 0,
                    "max_tokens": 2,
                    "extra": {"structured_outputs": {"choice": ["yes", "no"]}},
                },
            )
        )
        out[name] = {
            "reply": reply.strip(),
            "judge": judged.text.strip() == "yes",
            "lexical": lexical_match(str(q["answer"]), reply),
            "prompt_tokens": with_memory.usage.input_tokens
            if name == "memory"
            else full.usage.input_tokens,
        }
    return out
