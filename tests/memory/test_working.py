"""Working-memory trimming: a seeded randomized property test (many random conversations,
budgets and tool-call shapes) that the invariants hold, plus a few named cases."""

from __future__ import annotations

import random

import pytest

from flowopt.memory.working import approx_tokens, split_static_prefix, trim_history
from flowopt.messages import Message, ToolCall


def _conversation(rng: random.Random) -> list[Message]:
    msgs: list[Message] = [Message("system", "You are a helpful assistant. " * rng.randint(1, 5))]
    if rng.random() < 0.3:
        msgs.append(Message("developer", "Answer briefly."))
    n_call = 0
    for _turn in range(rng.randint(0, 12)):
        msgs.append(Message("user", "question " + "x" * rng.randint(1, 200)))
        for _hop in range(rng.choice([0, 0, 1, 2])):
            calls = []
            for _ in range(rng.randint(1, 3)):
                n_call += 1
                calls.append(ToolCall(f"call_{n_call}", "lookup", '{"q": "a"}'))
            msgs.append(Message("assistant", None, tool_calls=tuple(calls)))
            for c in calls:
                msgs.append(
                    Message("tool", "result " + "y" * rng.randint(1, 300), tool_call_id=c.id)
                )
        if rng.random() < 0.85:
            msgs.append(Message("assistant", "answer " + "z" * rng.randint(1, 200)))
    return msgs


def _check_invariants(before: list[Message], after: tuple[Message, ...]) -> None:
    n_static = split_static_prefix(before)
    # 1. the static prompt is kept, the same objects, in order
    assert after[:n_static] == tuple(before[:n_static])
    assert all(a is b for a, b in zip(after[:n_static], before[:n_static], strict=True))
    # 2. the rest is a suffix of the history (oldest dropped first)
    rest = after[n_static:]
    if rest:
        assert tuple(before[len(before) - len(rest) :]) == rest
    # 3. no pair broken: a kept tool result has its call; a kept call has all its results;
    #    a kept assistant turn that answered a user turn has that user turn
    kept_ids = {id(m) for m in after}
    for i, m in enumerate(before):
        if id(m) not in kept_ids:
            continue
        if m.role == "tool":
            owner = [a for a in before[:i] if any(c.id == m.tool_call_id for c in a.tool_calls)]
            assert owner and id(owner[0]) in kept_ids, "tool result kept without its call"
        if m.tool_calls:
            for c in m.tool_calls:
                results = [t for t in before if t.tool_call_id == c.id]
                assert all(id(t) in kept_ids for t in results), "call kept without its result"
        if m.role == "assistant" and i > n_static and before[i - 1].role == "user":
            assert id(before[i - 1]) in kept_ids, "answer kept without its question"
    # 4. the current turn (last user message onwards) is always kept
    users = [i for i, m in enumerate(before) if m.role == "user"]
    if users:
        assert all(id(m) in kept_ids for m in before[users[-1] :])


@pytest.mark.parametrize("seed", range(400))
def test_trimming_never_breaks_a_pair_or_drops_the_system_prompt(seed: int) -> None:
    rng = random.Random(seed)
    conv = _conversation(rng)
    budget = rng.randint(1, 1500)
    result = trim_history(conv, budget)
    _check_invariants(conv, result.messages)
    assert result.tokens_after == sum(approx_tokens(m) for m in result.messages)
    if not result.over_budget:
        assert result.tokens_after <= budget
    assert result.dropped == len(conv) - len(result.messages)


def test_under_budget_is_untouched() -> None:
    conv = [Message("system", "s"), Message("user", "hi"), Message("assistant", "hello")]
    result = trim_history(conv, 10_000)
    assert result.messages == tuple(conv) and result.dropped == 0


def test_drops_oldest_pairs_first() -> None:
    conv = [Message("system", "s")]
    for i in range(10):
        conv += [Message("user", f"q{i} " + "a" * 40), Message("assistant", f"a{i} " + "b" * 40)]
    conv.append(Message("user", "now"))
    result = trim_history(conv, 60)
    texts = [m.text.split()[0] for m in result.messages[1:]]
    assert texts[-1] == "now" and texts[0].startswith("q")
    assert result.dropped > 0 and not result.over_budget


def test_current_turn_over_budget_is_kept_and_flagged() -> None:
    conv = [Message("system", "s"), Message("user", "old"), Message("assistant", "ok")]
    conv.append(Message("user", "x" * 4000))
    result = trim_history(conv, 50)
    assert result.over_budget
    assert result.messages == (conv[0], conv[-1])


async def test_the_middleware_trims_and_records_it() -> None:
    from flowopt.memory import MemoryMiddleware
    from flowopt.types import Request, Response

    mw = MemoryMiddleware(working_tokens=80)
    sent: list[Request] = []

    async def recording_terminal(request: Request) -> Response:  # no model: trimming only
        sent.append(request)
        return Response(text="ok", model="none")

    chat = [{"role": "system", "content": "Be brief."}]
    for i in range(20):
        chat += [
            {"role": "user", "content": f"question {i} " + "q" * 30},
            {"role": "assistant", "content": f"answer {i} " + "a" * 30},
        ]
    chat.append({"role": "user", "content": "last question"})
    response = await mw(Request.chat(chat, user="u"), recording_terminal)
    (d,) = response.decisions
    assert d.detail["trimmed"] > 0 and d.detail["tokens_after"] <= 80
    (got,) = sent
    assert got.messages[0].text == "Be brief." and got.messages[-1].text == "last question"
    assert got.messages[1].role == "user"
