"""Speculation on a fake backend: lossless under every interleaving, side effects refused
at build time, off under load shedding, and a checkpointer that only sees committed state.

``StepGatedFakeBackend`` holds a step's request until the test opens that step's gate,
so each interleaving (A first, B first, B still running when A ends) is forced by events,
never by sleeps or timing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from tests.speculate.fakes import FixedGuesser, StepGatedFakeBackend, steps

from flowopt import BackendError, LoadShed, Request, SpecError, TokenEvent, parse_spec, pipeline
from flowopt.registry import guessers
from flowopt.speculate import Guess, speculation_stats
from flowopt.testing import FakeBackend, SpanCapture


@pytest.fixture(autouse=True)
def _fixed_guesser() -> Any:
    guessers.register("fixed-test", FixedGuesser)
    yield
    guessers.unregister("fixed-test")


def _pipe(backend: Any, guess: str | None, **kw: Any) -> Any:
    spec = (
        # max_waste 1: no waste ledger, so the very first run speculates (the ledger is
        # tested in test_gate.py)
        [
            {
                "from": "classify",
                "to": "answer",
                "guesser": {"fixed-test": {"label": guess}},
                "max_waste": 1.0,
            }
        ]
        if guess
        else []
    )
    return pipeline("spec", backend=backend, steps=steps(), speculate=spec, **kw)


async def _plain(text: str) -> Any:
    return await _pipe(StepGatedFakeBackend(), None).ainvoke(text)


def _same(a: Any, b: Any) -> None:
    assert a.outputs == b.outputs and a.text == b.text
    assert [(h.step, h.response.text) for h in a.hops] == [
        (h.step, h.response.text) for h in b.hops
    ]


async def test_right_guess_b_finishes_first_is_committed() -> None:
    fb = StepGatedFakeBackend()
    fb.gates["classify"] = asyncio.Event()
    run = asyncio.ensure_future(_pipe(fb, "billing").ainvoke("I want a refund"))
    await fb.done["answer"].wait()  # B ran on the guess while A is held
    fb.gates["classify"].set()
    result = await run
    _same(result, await _plain("I want a refund"))
    assert _answers(fb) == 1
    stats = speculation_stats(_pipe(fb, "billing"))  # a fresh pipeline has fresh figures
    assert stats["classify->answer"].runs == 0


async def test_right_guess_b_slower_waits_for_b() -> None:
    fb = StepGatedFakeBackend()
    fb.gates["answer"] = asyncio.Event()
    pipe = _pipe(fb, "billing")
    run = asyncio.ensure_future(pipe.ainvoke("I want a refund"))
    await fb.done["classify"].wait()
    fb.gates["answer"].set()
    _same(await run, await _plain("I want a refund"))
    s = speculation_stats(pipe)["classify->answer"]
    assert (s.hits, s.misses, fb.cancelled) == (1, 0, [])


async def _until(cond: Any) -> None:
    """Yield to the loop until ``cond()`` holds (synchronisation, not a timed wait)."""
    # sleep(0) only yields to the loop; the condition (shed pools, call logs) has no event
    while not cond():  # noqa: ASYNC110
        await asyncio.sleep(0)


def _answers(fb: StepGatedFakeBackend) -> int:
    return [r.step for r in fb.calls].count("answer")


async def test_wrong_guess_cancels_b_mid_request_and_reruns() -> None:
    fb = StepGatedFakeBackend()
    fb.gates["answer"] = asyncio.Event()
    fb.gates["classify"] = asyncio.Event()
    pipe = _pipe(fb, "tech")
    run = asyncio.ensure_future(pipe.ainvoke("I want a refund"))
    await _until(lambda: _answers(fb) == 1)  # the guessed B's request is in flight
    fb.gates["classify"].set()
    await _until(lambda: fb.cancelled)  # ... and is cancelled when A disagrees
    fb.gates["answer"].set()
    result = await run
    _same(result, await _plain("I want a refund"))
    assert fb.cancelled == ["Handle tech: I want a refund"]
    assert speculation_stats(pipe)["classify->answer"].cancelled == 1
    assert speculation_stats(pipe)["classify->answer"].misses == 1


async def test_a_fails_cancels_b_and_raises_as_without_speculation() -> None:
    fb = StepGatedFakeBackend()
    fb.gates["answer"] = asyncio.Event()
    fb.gates["classify"] = asyncio.Event()
    fb.fail["classify"].append(BackendError("boom", endpoint="fake://gated"))
    run = asyncio.ensure_future(_pipe(fb, "billing").ainvoke("I want a refund"))
    await _until(lambda: _answers(fb) == 1)
    fb.gates["classify"].set()
    with pytest.raises(BackendError, match="boom"):
        await run
    assert fb.cancelled == ["Handle billing: I want a refund"]
    plain = StepGatedFakeBackend()
    plain.fail["classify"].append(BackendError("boom", endpoint="fake://gated"))
    with pytest.raises(BackendError, match="boom"):
        await _pipe(plain, None).ainvoke("I want a refund")


async def test_b_fails_on_the_right_guess_reruns_b() -> None:
    fb = StepGatedFakeBackend()
    fb.gates["classify"] = asyncio.Event()
    fb.fail["answer"].append(BackendError("guessed B failed", endpoint="fake://gated"))
    run = asyncio.ensure_future(_pipe(fb, "billing").ainvoke("I want a refund"))
    await _until(lambda: _answers(fb) == 1)
    fb.gates["classify"].set()
    _same(await run, await _plain("I want a refund"))
    assert _answers(fb) == 2


async def test_streamed_run_never_shows_guessed_tokens() -> None:
    fb = FakeBackend(lambda r: "tech" if r.step == "classify" else f"re {r.last_user_text}")
    pipe = _pipe(fb, "billing")
    events = [e async for e in pipe.astream("my screen is broken")]
    tokens = "".join(e.text for e in events if isinstance(e, TokenEvent) and e.step == "answer")
    assert "billing" not in tokens and tokens == "re Handle tech: my screen is broken"
    hit = _pipe(FakeBackend(lambda r: "tech" if r.step == "classify" else "ok"), "tech")
    events = [e async for e in hit.astream("my screen is broken")]
    assert [e.text for e in events if isinstance(e, TokenEvent) and e.step == "answer"] == ["ok"]


async def test_checkpointer_sees_only_committed_state() -> None:
    fb = StepGatedFakeBackend()
    fb.gates["classify"] = asyncio.Event()
    saver = InMemorySaver()
    pipe = _pipe(fb, "tech", checkpointer=saver)
    run = asyncio.ensure_future(pipe.ainvoke("I want a refund", thread_id="t1"))
    await fb.done["answer"].wait()  # the wrong guess's B finished before A
    fb.gates["classify"].set()
    await run
    config = {"configurable": {"thread_id": "t1"}}
    history = [snap.values async for snap in pipe.graph.aget_state_history(config)]
    seen = {v.get("answer") for v in history} - {None}
    assert seen == {"answer to [Handle billing: I want a refund]"}
    assert any("Handle tech" in r.last_user_text for r in fb.calls)  # it did speculate


async def test_speculation_is_off_while_the_shedder_is_saturated() -> None:
    fb = StepGatedFakeBackend()
    fb.gates["hold"] = asyncio.Event()
    shed = LoadShed(max_concurrency=2, max_queue=8)
    pipe = _pipe(fb, "billing", middleware=[shed])
    holds = [asyncio.ensure_future(pipe.acall(Request.chat("x", step="hold"))) for _ in range(2)]
    await _until(lambda: "default" in shed.pools and shed.pools["default"].active == 2)
    cap = SpanCapture()
    run = asyncio.ensure_future(pipe.ainvoke("I want a refund"))
    await _until(lambda: shed.pools["default"].queue)  # classify waits; no B was started
    fb.gates["hold"].set()
    await asyncio.gather(*holds)
    _same(await run, await _plain("I want a refund"))
    s = speculation_stats(pipe)["classify->answer"]
    assert (s.skipped_shed, s.speculated) == (1, 0)
    assert _answers(fb) == 1
    outcomes = [sp.attributes["flowopt.speculation.outcome"] for sp in cap.by_name("speculation")]
    assert outcomes[-1] == "skipped_shed"


def _spec(**change: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "s",
        "backend": "fake",
        "steps": steps(),
        "speculate": [{"from": "classify", "to": "answer", "guesser": "lookup"}],
    }
    data.update(change)
    return data


def test_yaml_round_trip() -> None:
    spec = parse_spec(_spec())
    again = parse_spec(__import__("yaml").safe_load(spec.to_yaml()))
    assert again == spec and again.speculate[0].target == "answer"


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (
            {
                "steps": [
                    steps()[0],
                    {"name": "answer", "function": "tests.core.steps_fixture:shout"},
                ]
            },
            "'answer' is a function step not declared pure",
        ),
        ({"middleware": ["memory"]}, "step 'answer' runs behind middleware ['memory']"),
        (
            {"steps": [{"name": "classify", "prompt": "{input}"}, steps()[1]]},
            "step 'classify' outputs free text",
        ),
        (
            {
                "steps": [*steps(), {"name": "other", "prompt": "x"}],
                "edges": [["START", "other"], ["other", "answer"], ["classify", "answer"]],
            },
            "step 'answer' must be reached only from 'classify'",
        ),
        (
            {
                "steps": [
                    steps()[0],
                    {**steps()[1], "params": {"extra": {"tools": [{"type": "function"}]}}},
                ]
            },
            "step 'answer' calls tools",
        ),
    ],
)
def test_unsafe_speculation_is_refused_at_build_time(change: dict[str, Any], names: str) -> None:
    with pytest.raises(SpecError, match=__import__("re").escape(names)):
        parse_spec(_spec(**change))


def test_a_pure_function_step_may_be_speculated() -> None:
    step = {"name": "answer", "function": "tests.core.steps_fixture:shout", "pure": True}
    spec = parse_spec(_spec(steps=[steps()[0], step]))
    assert spec.steps[1].pure and "pure: true" in spec.to_yaml()


def test_gate_prices_waste_and_calibrates_on_its_hit_rate() -> None:
    from flowopt.speculate import Gate

    edge = (
        parse_spec(_spec()).speculate[0].model_copy(update={"cost_factor": 3.0, "max_waste": 1.0})
    )
    gate = Gate(edge, [])
    assert gate.admit([Guess("billing", 0.6)])[1] == "speculate"  # no figures yet: threshold
    gate.stats.t1_ms = gate.stats.t2_ms = 100.0
    assert gate.admit([Guess("billing", 0.6)])[1] == "gate"  # 0.6 * 100 < 3 * 0.4 * 100
    assert gate.admit([Guess("billing", 0.8)])[1] == "speculate"
    for i in range(20):  # overconfident: its 0.8 guesses are right half the time
        gate.judge([Guess("billing", 0.8)], "billing" if i % 2 else "tech")
    assert gate.probability(Guess("billing", 0.8)) < 0.6
    assert gate.admit([Guess("billing", 0.8)])[1] == "gate"
    assert gate.admit([Guess("billing", 0.3)])[1] == "gate"  # below the threshold
