"""The speculation gate's decision: calibrated probabilities learned from every judged
guess, a waste budget that goes to the most probable guesses, and the backend's queue
read off the request path (a failed read is "unknown", never a blocked run).

Unit tests over fakes: a fake queue reader held by events and a fake clock, a fake
metrics endpoint (``httpx.MockTransport``) for the vLLM backend's ``queue_depth``, and a
simulated guesser whose confidence is (or is not) its real hit rate.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest
from tests.speculate.fakes import FixedGuesser, StepGatedFakeBackend, steps

from flowopt import VLLMBackend, parse_spec, pipeline
from flowopt.errors import BackendHTTPError, BackendProtocolError
from flowopt.registry import guessers
from flowopt.speculate import Gate, Guess, SpeculateSpec
from flowopt.speculate._queue import QueueProbe


def _edge(**change: Any) -> SpeculateSpec:
    spec = parse_spec(
        {
            "name": "g",
            "backend": "fake",
            "steps": steps(),
            "speculate": [{"from": "classify", "to": "answer", "guesser": "lookup"}],
        }
    )
    return spec.speculate[0].model_copy(update=change)


# -- calibration --------------------------------------------------------------------------
def test_calibration_learns_from_guesses_that_were_not_started() -> None:
    gate = Gate(_edge(), [])
    assert gate.probability(Guess("billing", 0.7)) == pytest.approx(0.7)  # no evidence yet
    for _ in range(40):  # judged after A answered, whether or not the gate started them
        gate.judge([Guess("billing", 0.7)], "billing")
        gate.judge([Guess("tech", 0.7)], "billing")
    assert gate.probability(Guess("billing", 0.7)) > 0.8  # a reliable label
    assert gate.probability(Guess("tech", 0.7)) < 0.3  # an unreliable one, same confidence


# -- waste budget -------------------------------------------------------------------------
def _paid(gate: Gate, runs: int = 20, tokens: int = 100) -> None:
    """B has run ``runs`` times for ``tokens`` each: the ledger's budget is a share of it."""
    gate.stats.b_runs, gate.stats.b_output_tokens = runs, runs * tokens


def test_the_budget_goes_to_the_most_probable_guesses() -> None:
    gate = Gate(_edge(cost_factor=0.0, max_waste=0.1), [])
    gate.stats.t1_ms = gate.stats.t2_ms = 100.0  # a miss wastes a whole B run (r = 1)
    _paid(gate)  # 2,000 B tokens: the ledger affords 200 wasted, two B runs' worth
    assert gate.admit([Guess("billing", 0.95)]) == ([Guess("billing", 0.95)], "speculate")
    # with 0.7 started too, the recent runs would waste (0.05 + 0.3) / 2 = 17.5% > 10%
    assert gate.admit([Guess("billing", 0.7)]) == ([], "budget")
    assert gate.admit([Guess("billing", 0.95)])[1] == "speculate"  # 0.05 / 3 fits
    assert (gate.stats.skipped_budget, gate.stats.skipped_gate) == (1, 0)
    off = Gate(_edge(cost_factor=0.0, max_waste=1.0), [])
    off.stats.t1_ms = off.stats.t2_ms = 100.0
    assert off.admit([Guess("billing", 0.6)])[1] == "speculate"  # 1: no budget, no ledger


def test_the_ledger_charges_guesses_in_flight_and_never_lends() -> None:
    gate = Gate(_edge(cost_factor=0.0, max_waste=0.1), [])
    gate.stats.t1_ms = gate.stats.t2_ms = 100.0
    assert gate.admit([Guess("billing", 0.99)])[1] == "budget"  # B never ran: nothing paid
    _paid(gate)
    first, _ = gate.admit([Guess("billing", 0.99)])
    held = gate.reserved
    assert first and held == pytest.approx(100.0)  # a whole B run reserved up front
    assert gate.admit([Guess("billing", 0.99)])[1] == "speculate"
    assert gate.admit([Guess("billing", 0.99)])[1] == "budget"  # two in flight: 200 of 200
    gate.settle(held)  # a run settled (a hit: it wasted nothing)
    assert gate.admit([Guess("billing", 0.99)])[1] == "speculate"
    gate.settle(gate.in_flight)
    gate.stats.wasted_output_tokens = 150  # real misses: 150 of the 200 are spent
    assert gate.admit([Guess("billing", 0.99)])[1] == "budget"


def _simulate(
    truth: Any, confidence: Any, t1: float, t2: float, max_waste: float, seed: int = 7
) -> Any:
    """Run the gate over 3,000 simulated runs of one edge, four at a time (all four are
    admitted before any is judged, as under concurrent traffic). B's runs take 50-150
    tokens; a wrong guess wastes min(1, T1/T2) of its own B run. Returns (wasted share of
    B's tokens, speculated share)."""
    rng = random.Random(seed)
    gate = Gate(_edge(max_waste=max_waste), [])
    s = gate.stats
    s.t1_ms, s.t2_ms = t1, t2
    r = min(1.0, t1 / t2)
    speculated = 0
    n, concurrent = 3000, 4
    for _ in range(n // concurrent):
        batch = []
        for _ in range(concurrent):
            c = confidence(rng)
            guess = Guess("billing", c)
            admitted, _ = gate.admit([guess])
            batch.append((guess, rng.random() < truth(c), bool(admitted), gate.reserved))
        for guess, hit, started, reserved in batch:
            if started:
                speculated += 1
                if not hit:
                    s.wasted_output_tokens += round(r * rng.randint(50, 150))
            s.b_output_tokens += rng.randint(50, 150)  # the committed (or re-run) B
            s.b_runs += 1
            gate.settle(reserved)
            gate.judge([guess], "billing" if hit else "tech")
    return s.wasted_tokens / s.b_tokens, speculated / n


@pytest.mark.parametrize(
    ("truth", "confidence", "t1", "t2"),
    [
        # calibrated confidences, A shorter than B (a miss wastes half a B run)
        (lambda c: c, lambda rng: rng.uniform(0.5, 1.0), 50.0, 100.0),
        # calibrated, T1 = T2 (a miss wastes a whole B run)
        (lambda c: c, lambda rng: rng.betavariate(5, 2), 100.0, 100.0),
        # an overconfident guesser: right 25 points less often than it says
        (lambda c: c - 0.25, lambda rng: rng.uniform(0.5, 1.0), 80.0, 100.0),
    ],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gated_waste_stays_within_the_budget(
    truth: Any, confidence: Any, t1: float, t2: float, seed: int
) -> None:
    waste_off, _ = _simulate(truth, confidence, t1, t2, max_waste=1.0, seed=seed)
    waste, speculated = _simulate(truth, confidence, t1, t2, max_waste=0.1, seed=seed)
    assert waste_off > 0.1  # without the budget these edges waste more than 10%
    assert waste <= 0.1  # a bound on what was wasted, not an expectation
    assert speculated > 0.1  # and the budget is spent, not hoarded


# -- the backend's queue ------------------------------------------------------------------
class FakeQueueReader:
    """A fake reader of a backend's queue: each read waits for ``release`` and then
    returns ``value`` or raises ``error``."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self.error: Exception | None = None
        self.release = asyncio.Event()
        self.release.set()
        self.reads = 0

    async def __call__(self) -> int:
        self.reads += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.value


async def _until(cond: Any) -> None:
    """Yield to the loop until ``cond()`` holds (synchronisation, not a timed wait)."""
    for _ in range(10_000):  # bounded: a condition that never comes fails, not hangs
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakePause:
    """A fake of the poller's wait between reads: records how long it was asked to wait
    and returns only when the test lets it (``tick``), after moving ``clock`` on by
    that long, so the test, not the wall clock, decides when the next poll happens."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.asked: list[float] = []
        self.tick = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        await self.tick.wait()
        self.tick.clear()
        self.clock.now += seconds


async def test_the_queue_is_polled_in_the_background_and_never_blocks() -> None:
    reader, clock = FakeQueueReader(3), FakeClock()
    pause = FakePause(clock)
    probe = QueueProbe(
        reader, interval=1.0, fresh_for=5.0, idle_after=3.0, clock=clock, pause=pause
    )
    reader.release.clear()
    assert probe.waiting() is None  # nothing read yet: unknown, and the poller started
    await _until(lambda: reader.reads == 1)  # its first read begins (and is held)
    assert probe.waiting() is None and reader.reads == 1  # a decision never waits for it
    reader.release.set()
    await _until(lambda: len(pause.asked) == 1)
    assert probe.waiting() == 3 and pause.asked == [1.0]  # at most one read a second
    reader.value = 0
    pause.tick.set()  # a second passes; nobody asks, yet the poller reads again
    await _until(lambda: len(pause.asked) == 2)
    assert reader.reads == 2 and probe.waiting() == 0  # fresh without a decision's help
    reader.error = OSError("connection refused")
    pause.tick.set()
    await _until(lambda: len(pause.asked) == 3)
    assert probe.waiting() is None and probe.failures == 1  # failed: unknown, counted
    reader.error = None
    n = len(pause.asked)
    while probe.polling:  # seconds pass and no decision asks: the poller stops by itself
        pause.tick.set()
        await _until(lambda n=n: not probe.polling or len(pause.asked) > n)
        n = len(pause.asked)
    # last asked at 102 (idle_after 3): reads at 103, 104 and 105, then it stops at 106
    assert (reader.reads, clock.now) == (6, 106.0)
    clock.now += 10.0
    assert probe.waiting() is None  # the last reading is too old now: unknown
    await _until(lambda: len(pause.asked) > n)  # a decision restarted it: it read again
    assert reader.reads == 7 and probe.waiting() == 0 and probe.polling
    await probe.aclose()
    assert not probe.polling


class FakeQueuedBackend(StepGatedFakeBackend):
    """The step-gated fake backend that also reports an engine queue."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    async def queue_depth(self) -> int:
        return self.waiting


@pytest.fixture
def _fixed() -> Any:
    guessers.register("fixed-gate", FixedGuesser)
    yield
    guessers.unregister("fixed-gate")


@pytest.mark.usefixtures("_fixed")
async def test_no_speculation_while_the_backend_reports_queued_requests() -> None:
    fb = FakeQueuedBackend()
    fb.waiting = 2
    edge = {
        "from": "classify",
        "to": "answer",
        "guesser": {"fixed-gate": {"label": "billing"}},
        "max_waste": 1.0,  # no ledger: the first run may speculate
    }
    pipe = pipeline("q", backend=fb, steps=steps(), speculate=[edge])
    gate = pipe.graph.flowopt_speculators["classify"].gate
    first = (await pipe.ainvoke("I want a refund")).speculation[0]
    assert (first.outcome, first.queue_unknown) == ("hit", True)  # unknown: not blocked
    await gate.queue.settled()
    second = (await pipe.ainvoke("I want a refund")).speculation[0]
    assert (second.outcome, second.queue_unknown) == ("skipped_queue", False)
    assert (gate.stats.skipped_queue, gate.stats.queue_unknown) == (1, 1)
    await gate.queue.aclose()
    off = pipeline("q-off", backend=fb, steps=steps(), speculate=[{**edge, "max_queued": None}])
    assert off.graph.flowopt_speculators["classify"].gate.queue is None


@pytest.mark.usefixtures("_fixed")
async def test_pipeline_aclose_stops_the_queue_poller() -> None:
    fb = FakeQueuedBackend()
    edge = {"from": "classify", "to": "answer", "guesser": {"fixed-gate": {"label": "billing"}}}
    pipe = pipeline("q-close", backend=fb, steps=steps(), speculate=[edge])
    probe = pipe.graph.flowopt_speculators["classify"].gate.queue
    await pipe.ainvoke("I want a refund")  # the first decision starts the poller
    assert probe.polling
    await pipe.aclose()
    assert not probe.polling


def _fake_metrics_endpoint(pages: dict[str, tuple[int, str]]) -> httpx.MockTransport:
    """A fake vLLM /metrics endpoint per host."""

    def handle(request: httpx.Request) -> httpx.Response:
        status, body = pages[request.url.host]
        assert request.url.path == "/metrics"
        return httpx.Response(status, text=body)

    return httpx.MockTransport(handle)


PAGE = """# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
vllm:num_requests_waiting{engine="1",model_name="m"} 1.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 9.0
vllm:num_requests_running{engine="0",model_name="m"} 4.0
"""


async def test_vllm_backend_reads_its_engines_queue() -> None:
    pages = {"a": (200, PAGE), "b": (200, "vllm:num_requests_waiting 4\n")}
    backend = VLLMBackend(
        base_urls=["http://a:8000", "http://b:8000"],
        model="m",
        transport=_fake_metrics_endpoint(pages),
    )
    assert await backend.queue_depth() == 7  # 2 + 1 on replica a, 4 on b
    pages["b"] = (500, "boom")
    with pytest.raises(BackendHTTPError, match="/metrics"):
        await backend.queue_depth()
    pages["b"] = (200, "# no vllm metrics here\n")
    with pytest.raises(BackendProtocolError, match="num_requests_waiting"):
        await backend.queue_depth()
    await backend.aclose()


def test_gate_knobs_round_trip_through_yaml() -> None:
    import yaml

    edge = {"from": "classify", "to": "answer", "guesser": "lookup"}
    spec = parse_spec(
        {
            "name": "g",
            "backend": "fake",
            "steps": steps(),
            "speculate": [{**edge, "max_waste": 0.2, "max_queued": None, "min_samples": 5}],
        }
    )
    again = parse_spec(yaml.safe_load(spec.to_yaml()))
    assert again == spec
    assert (again.speculate[0].max_waste, again.speculate[0].max_queued) == (0.2, None)
