"""Chat inputs (a list of messages) and per-run params, on a fake backend that records
what each LLM step was sent."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from flowopt import InvalidRequestError, pipeline
from flowopt.errors import ConfigError
from flowopt.testing import FakeBackend
from flowopt.types import Message, Params

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "I am Ada."},
    {"role": "assistant", "content": "Hi Ada."},
    {"role": "user", "content": "Who am I?"},
]


def _sent(fb: FakeBackend, i: int = -1) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in fb.calls[i].messages]


def test_a_function_step_sees_the_chat_and_the_last_user_turn() -> None:
    p = pipeline(
        "c",
        backend=FakeBackend(),
        steps=[{"name": "s", "function": "tests.core.test_pipeline_chat:echo"}],
    )
    r = p.invoke(CHAT)
    assert r.outputs["s"] == {"messages": CHAT, "input": "Who am I?"}


def echo(state: Any) -> dict[str, Any]:
    return {"messages": state["messages"], "input": state["input"]}


def test_llm_step_request_for_a_chat_input() -> None:
    fb = FakeBackend()
    p = pipeline(
        "c",
        backend=fb,
        steps=[
            {"name": "plain", "prompt": "{input}"},
            {"name": "rewrite", "system": "You rewrite.", "prompt": "Shorter: {plain}"},
        ],
    )
    r = p.invoke(CHAT)
    history = [("user", "I am Ada."), ("assistant", "Hi Ada.")]
    # `{input}`: the caller's conversation as sent, its last turn once
    assert _sent(fb, 0) == [("system", "Be brief."), *history, ("user", "Who am I?")]
    # another template: step system first, then the caller's; the step prompt is the turn
    assert _sent(fb, 1) == [
        ("system", "You rewrite.\n\nBe brief."),
        *history,
        ("user", "Shorter: echo: Who am I?"),
    ]
    assert r.text == "echo: Shorter: echo: Who am I?"


def test_chat_input_forms_and_text_is_unchanged() -> None:
    fb = FakeBackend()
    p = pipeline("c", backend=fb, steps=[{"name": "a", "prompt": "Q: {input}"}])
    for chat in (
        [Message("user", "hi")],
        [("user", "hi")],
        {"messages": [{"role": "user", "content": "hi"}]},
        Message("user", "hi"),
    ):
        p.invoke(chat)
        assert _sent(fb) == [("user", "Q: hi")]
    # a mapping may name `input` itself; templates see it, the chat is still the history
    p.invoke({"messages": CHAT, "input": "override"})
    assert _sent(fb)[-1] == ("user", "Q: override") and len(fb.calls[-1].messages) == 4
    # text: no chat in the state, one user message as before
    p.invoke({"input": "hi", "messages": None})
    assert _sent(fb) == [("user", "Q: hi")]
    r = p.invoke("hi")
    assert _sent(fb) == [("user", "Q: hi")] and "messages" not in r.outputs


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (CHAT[:3], "end with a user message"),
        ([{"role": "system", "content": "s"}], "end with a user message"),
        ([], "end with a user message"),
        ({"messages": "hi"}, "list of messages"),
        ([{"role": "robot", "content": "x"}], "role"),
        ([{"role": "user"}], "needs 'role' and 'content'"),
        (42, "text or a mapping"),
    ],
)
def test_bad_chat_inputs(bad: Any, match: str) -> None:
    fb = FakeBackend()
    p = pipeline("c", backend=fb, steps=[{"name": "a", "prompt": "{input}"}])
    with pytest.raises(InvalidRequestError, match=match):
        p.invoke(bad)
    assert fb.calls == []


def test_params_override_the_answer_steps_only() -> None:
    fb = FakeBackend()
    p = pipeline(
        "c",
        backend=fb,
        defaults={"temperature": 0.7},
        steps=[
            {"name": "label", "prompt": "Label {input}", "params": {"max_tokens": 3}},
            {"name": "answer", "prompt": "{input}", "params": {"max_tokens": 50, "seed": 1}},
        ],
    )
    assert p.answer_steps == {"answer"}
    p.invoke("q", params=Params(temperature=0, max_tokens=9, extra={"top_k": 2}))
    label, answer = (c.params for c in fb.calls)
    assert (label.temperature, label.max_tokens) == (0.7, 3)
    assert (answer.temperature, answer.max_tokens, answer.seed) == (0, 9, 1)
    assert dict(answer.extra) == {"top_k": 2}
    fb.calls.clear()
    p.invoke("q", params={"stop": ["\n"]})  # a mapping works; unset fields keep the step's
    assert fb.calls[1].params == Params(temperature=0.7, max_tokens=50, seed=1, stop=("\n",))
    fb.calls.clear()
    p.invoke("q", params=Params())  # nothing set: the steps' own params
    assert fb.calls[1].params == Params(temperature=0.7, max_tokens=50, seed=1)
    with pytest.raises(InvalidRequestError, match="unknown sampling parameter"):
        p.invoke("q", params={"temprature": 0})


def test_a_checkpointed_text_run_does_not_reuse_the_previous_chat() -> None:
    fb = FakeBackend()
    p = pipeline(
        "c",
        backend=fb,
        steps=[{"name": "a", "prompt": "{input}"}],
        checkpointer=InMemorySaver(),
    )
    p.invoke(CHAT, thread_id="t1")
    assert len(fb.calls[-1].messages) == 4
    p.invoke("plain", thread_id="t1")
    assert _sent(fb) == [("user", "plain")]


def test_messages_is_a_reserved_output_key() -> None:
    with pytest.raises(ConfigError, match="reserved key 'messages'"):
        pipeline(
            "c",
            backend=FakeBackend(),
            steps=[{"name": "a", "prompt": "{input}", "output": "messages"}],
        )
