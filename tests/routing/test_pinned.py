"""Routing is one typed mechanism: a pinned step stays pinned, side calls are hops.

Unit tests of the routing logic over named fakes (``FakeBackend`` answers without a
server); the same layers against the real vLLM server are in test_triage_cascade.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from flowopt import pipeline
from flowopt.errors import BackendUnavailable, EndpointCoolingDown
from flowopt.middleware.base import CallNext
from flowopt.testing import FakeBackend, SpanCapture
from flowopt.types import Request, Response

TIERS = [{"name": "cheap", "backend": "default"}, {"name": "strong", "backend": "strong"}]


def _always(tier: str) -> dict[str, Any]:
    """A rules classifier that names ``tier`` for every request."""
    return {"rules": {"rules": [{"pattern": ".", "then": tier}]}}


class RecordingLayer:
    """A middleware below the routing layers that records every request it passes on
    (what a limiter, shedder or retry layer would see)."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[Request] = []

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        self.seen.append(request)
        return await call_next(request)


def _two_steps(cheap: FakeBackend, strong: FakeBackend, middleware: list[Any]) -> Any:
    return pipeline(
        "pinned",
        backend=cheap,  # type: ignore[arg-type]
        backends={"strong": strong},  # type: ignore[dict-item]
        middleware=middleware,
        steps=[
            {"name": "free", "prompt": "free: {input}"},
            {"name": "on_strong", "prompt": "strong: {input}", "backend": "strong"},
            {"name": "on_default", "prompt": "default: {input}", "backend": "default"},
        ],
    )


@pytest.mark.parametrize("chosen", ["cheap", "strong"])
async def test_triage_never_reroutes_a_pinned_step(chosen: str) -> None:
    cheap, strong = FakeBackend(name="cheap"), FakeBackend(name="strong")
    pipe = _two_steps(cheap, strong, [{"triage": {"tiers": TIERS, "classifier": _always(chosen)}}])
    result = await pipe.ainvoke("q")
    by_backend = {
        "cheap": [r.step for r in cheap.calls],
        "strong": [r.step for r in strong.calls],
    }
    # the unpinned step goes where triage says; each pinned step stays on its backend
    assert "on_strong" in by_backend["strong"] and "on_strong" not in by_backend["cheap"]
    assert "on_default" in by_backend["cheap"] and "on_default" not in by_backend["strong"]
    assert "free" in by_backend[chosen]
    actions = {h.step: [d.action for d in h.response.decisions] for h in result.hops}
    assert actions["on_strong"] == ["pinned"] and actions["on_default"] == ["pinned"]
    assert actions["free"] == ["routed"]


async def test_cascade_and_fallback_leave_a_pinned_step_alone() -> None:
    cheap = FakeBackend(name="cheap")
    strong = FakeBackend(name="strong", fail=BackendUnavailable("down", endpoint="fake://s"))
    pipe = pipeline(
        "pinned-fallback",
        backend=cheap,  # type: ignore[arg-type]
        backends={"strong": strong},  # type: ignore[dict-item]
        middleware=[
            {"cascade": {"tiers": TIERS}},
            {"fallback": {"tiers": ["default"], "stale": False}},
        ],
        steps=[{"name": "only_strong", "prompt": "{input}", "backend": "strong"}],
    )
    with pytest.raises(BackendUnavailable):
        await pipe.ainvoke("q")
    # the pinned step failed on its backend; nothing moved it to the cheap tier
    assert cheap.calls == [] and len(strong.calls) == 1


async def test_a_client_pin_through_acall_is_kept() -> None:
    cheap, strong = FakeBackend(name="cheap"), FakeBackend(name="strong")
    pipe = _two_steps(cheap, strong, [{"triage": {"tiers": TIERS, "classifier": _always("cheap")}}])
    await pipe.acall(Request.chat("hi"), backend="strong")
    assert len(strong.calls) == 1 and cheap.calls == []
    await pipe.acall(Request.chat("hi"))  # unpinned: triage chooses
    assert len(cheap.calls) == 1


def test_routed_and_avoiding_are_typed_and_pins_hold() -> None:
    r = Request.chat("x")
    assert r.route is None and r.routed("strong").route == "strong"
    pinned = r.replace(route="default", pinned=True)
    assert pinned.routed("strong") is pinned
    a = r.avoiding({"http://a": 10.0}).avoiding({"http://a": 5.0, "http://b": 1.0})
    assert dict(a.avoid) == {"http://a": 10.0, "http://b": 1.0}
    assert a.avoided(now=2.0) == {"http://a": 8.0}


async def test_every_endpoint_avoided_refuses_without_sending() -> None:
    cheap = FakeBackend(name="cheap")
    pipe = pipeline("avoid", backend=cheap, steps=[{"name": "a", "prompt": "{input}"}])  # type: ignore[arg-type]
    req = Request.chat("x").avoiding({"fake://cheap": 1e12})
    with pytest.raises(EndpointCoolingDown):
        await pipe.acall(req)
    assert cheap.calls == []


def _judge_answer(request: Request) -> str:
    return "easy" if request.purpose == "triage-judge" else f"answer to {request.last_user_text}"


async def test_side_calls_pass_the_layers_below_and_are_traced_hops() -> None:
    capture = SpanCapture()
    capture.clear()
    cheap = FakeBackend(_judge_answer, name="cheap")
    strong = FakeBackend(_judge_answer, name="strong")
    recorder = RecordingLayer()
    pipe = pipeline(
        "side-calls",
        backend=cheap,  # type: ignore[arg-type]
        backends={"strong": strong},  # type: ignore[dict-item]
        middleware=[
            {"triage": {"tiers": TIERS, "classifier": {"judge": {"backend": "strong"}}}},
            recorder,
        ],
        steps=[{"name": "a", "prompt": "{input}"}],
    )
    await pipe.ainvoke("what is 2+2?")
    # the judge's call went through the layer below triage, pinned to the judge's backend
    purposes = [(r.purpose, r.route, r.pinned) for r in recorder.seen]
    assert purposes == [("triage-judge", "strong", True), (None, "default", False)]
    assert [r.purpose for r in strong.calls] == ["triage-judge"]
    assert [r.step for r in cheap.calls] == ["a"]
    # ... and it is a traced hop: its own chat span under the triage middleware's span
    spans = capture.spans()
    triage = next(s for s in spans if s.name == "middleware triage")
    recorders = [s for s in spans if s.name == "middleware recorder"]
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert len(chats) == 2 and len(recorders) == 2
    assert all(
        s.parent is not None and s.parent.span_id == triage.context.span_id for s in recorders
    )
    recorder_ids = {s.context.span_id for s in recorders}
    assert all(c.parent is not None and c.parent.span_id in recorder_ids for c in chats)
