"""What speculation costs, where a user reads it: wasted tokens (and their price) on the
run's :class:`~flowopt.Result`, each run handed to observers, and the gateway's
Prometheus counters by pipeline, edge and outcome on ``/metrics``.

Over fakes (``StepGatedFakeBackend`` holds a step until the test releases it), so the
wrong branch's fate (finished or cancelled) is forced by events, never by timing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from tests.speculate.fakes import FixedGuesser, StepGatedFakeBackend, steps

from flowopt import Speculation, pipeline
from flowopt.gateway.app import create_app
from flowopt.gateway.metrics import GatewayMetrics
from flowopt.registry import guessers
from flowopt.speculate import observe, speculation_stats
from flowopt.types import Usage


@pytest.fixture(autouse=True)
def _fixed_guesser() -> Any:
    guessers.register("fixed-acct", FixedGuesser)
    yield
    guessers.unregister("fixed-acct")


def _pipe(backend: Any, guess: str, name: str = "acct") -> Any:
    edge = {
        "from": "classify",
        "to": "answer",
        "guesser": {"fixed-acct": {"label": guess}},
        "max_waste": 1.0,  # no waste ledger: the first run speculates
    }
    return pipeline(name, backend=backend, steps=steps(), speculate=[edge])


async def _miss_after_b_finished(fb: StepGatedFakeBackend, pipe: Any) -> Any:
    """A wrong guess whose B finished before A answered: its tokens are known exactly."""
    fb.gates["classify"] = asyncio.Event()
    run = asyncio.ensure_future(pipe.ainvoke("I want a refund"))
    await fb.done["answer"].wait()
    fb.gates["classify"].set()
    return await run


async def test_a_wrong_guess_puts_its_tokens_and_cost_on_the_result() -> None:
    fb = StepGatedFakeBackend()
    fb.cost = 0.25
    result = await _miss_after_b_finished(fb, _pipe(fb, "tech"))
    (rec,) = result.speculation
    assert (rec.edge, rec.outcome, rec.guess, rec.branches) == (
        "classify->answer",
        "miss",
        "tech",
        1,
    )
    assert rec.wasted == Usage(input_tokens=5, output_tokens=3) and not rec.estimated
    assert result.wasted == Usage(input_tokens=5, output_tokens=3)
    assert result.wasted_cost == pytest.approx(0.25)
    # the committed accounting is the plain run's: two hops, their usage and cost only
    assert [h.step for h in result.hops] == ["classify", "answer"]
    assert result.usage == Usage(input_tokens=10, output_tokens=6)
    assert result.cost == pytest.approx(0.5)
    out = result.to_dict()
    assert out["wasted"] == {"input_tokens": 5, "output_tokens": 3, "cost": 0.25}
    assert out["speculation"][0]["outcome"] == "miss"
    assert "Handle" not in str(out["speculation"])  # no prompt content in the ledger


async def test_a_cancelled_wrong_guess_is_estimated_from_b_s_usual_run() -> None:
    fb = StepGatedFakeBackend()
    pipe = _pipe(fb, "tech")
    await pipe.ainvoke("my screen is broken")  # a hit: B's usual tokens are now known
    fb.gates["answer"] = asyncio.Event()
    fb.gates["classify"] = asyncio.Event()
    run = asyncio.ensure_future(pipe.ainvoke("I want a refund"))
    while not any("Handle tech: I want" in r.last_user_text for r in fb.calls):  # noqa: ASYNC110
        await asyncio.sleep(0)  # yields to the loop until the guessed B is in flight
    fb.gates["classify"].set()
    while not fb.cancelled:  # noqa: ASYNC110
        await asyncio.sleep(0)
    fb.gates["answer"].set()
    rec = (await run).speculation[0]
    assert rec.outcome == "miss" and rec.estimated
    # at most one usual B run (5 in + 3 out), a share of it by the time it ran
    assert 0 <= rec.wasted.input_tokens <= 5 and 0 <= rec.wasted.output_tokens <= 3
    s = speculation_stats(pipe)["classify->answer"]
    assert s.wasted_tokens == rec.wasted.total_tokens and s.cancelled == 1


async def test_a_hit_and_a_skip_waste_nothing_and_say_why() -> None:
    fb = StepGatedFakeBackend()
    hit = (await _pipe(fb, "billing").ainvoke("I want a refund")).speculation[0]
    assert (hit.outcome, hit.wasted, hit.lost_ms) == ("hit", Usage(), 0.0)
    assert hit.saved_ms >= 0.0
    edge = {
        "from": "classify",
        "to": "answer",
        "guesser": {"fixed-acct": {"label": "billing", "confidence": 0.2}},
    }
    low = pipeline("low", backend=fb, steps=steps(), speculate=[edge])
    result = await low.ainvoke("I want a refund")
    assert result.speculation[0].outcome == "skipped_gate" and result.wasted == Usage()
    assert result.wasted_cost is None and result.to_dict()["wasted"]["input_tokens"] == 0


async def test_observers_get_every_run_and_can_stop() -> None:
    fb = StepGatedFakeBackend()
    pipe = _pipe(fb, "billing")
    seen: list[tuple[str, Speculation]] = []

    def broken(name: str, rec: Speculation) -> None:
        raise RuntimeError("an observer bug never breaks a run")

    stop = observe(pipe, lambda name, rec: seen.append((name, rec)))
    stop_broken = observe(pipe, broken)
    await pipe.ainvoke("I want a refund")
    await pipe.ainvoke("screen broken")  # guess billing, A says tech: a miss
    stop()
    stop_broken()
    await pipe.ainvoke("I want a refund")
    assert [(n, r.outcome) for n, r in seen] == [("acct", "hit"), ("acct", "miss")]


def test_metrics_count_by_pipeline_edge_and_outcome() -> None:
    m = GatewayMetrics()
    m.observe_speculation("p", Speculation("a->b", "hit", saved_ms=1500.0))
    m.observe_speculation(
        "p", Speculation("a->b", "miss", lost_ms=20.0, wasted=Usage(7, 2), queue_unknown=True)
    )
    m.observe_speculation("p", Speculation("a->b", "miss", wasted=Usage(3, 0)))
    get = m.registry.get_sample_value
    labels = {"pipeline": "p", "edge": "a->b"}
    assert get("flowopt_speculation_total", {**labels, "outcome": "hit"}) == 1
    assert get("flowopt_speculation_total", {**labels, "outcome": "miss"}) == 2
    assert get("flowopt_speculation_wasted_tokens_total", {**labels, "kind": "prompt"}) == 10
    assert get("flowopt_speculation_wasted_tokens_total", {**labels, "kind": "completion"}) == 2
    assert get("flowopt_speculation_saved_seconds_total", labels) == pytest.approx(1.5)
    assert get("flowopt_speculation_lost_seconds_total", labels) == pytest.approx(0.02)
    assert get("flowopt_speculation_queue_unknown_total", labels) == 1


async def test_the_gateway_serves_speculation_counters_on_metrics() -> None:
    fb = StepGatedFakeBackend()
    app = create_app(_pipe(fb, "billing", name="support"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        for text in ("I want a refund", "my screen is broken"):
            body = {"model": "support", "messages": [{"role": "user", "content": text}]}
            assert (await c.post("/v1/chat/completions", json=body)).status_code == 200
        page = (await c.get("/metrics")).text
    for outcome in ("hit", "miss"):
        line = (
            f'flowopt_speculation_total{{edge="classify->answer",outcome="{outcome}",'
            f'pipeline="support"}} 1.0'
        )
        assert line in page
