"""Pipeline behaviour on a fake backend: steps, routing, streaming, batching, errors."""

from __future__ import annotations

import asyncio

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from flowopt import InvalidRequestError, Result, StepError, StepEvent, TokenEvent, pipeline
from flowopt.testing import FakeBackend, SpanCapture


def _classify_or_echo(request: object) -> str:
    text = request.last_user_text  # type: ignore[attr-defined]
    if text.startswith("Classify"):
        return "billing" if "refund" in text else "other"
    return f"answer({text})"


def _pipe(**kw: object) -> tuple[FakeBackend, object]:
    fb = FakeBackend(_classify_or_echo)
    return fb, pipeline("t", backend=fb, **kw)  # type: ignore[arg-type]


def test_linear_steps_and_result_shape() -> None:
    fb, p = _pipe(
        steps=[
            {"name": "a", "prompt": "first {input}"},
            {"name": "shout", "function": "tests.core.steps_fixture:shout"},
            {"name": "b", "prompt": "second {a} {shout}"},
        ],
        defaults={"temperature": 0, "max_tokens": 9},
    )
    r = p.invoke("hi", user="u1", tenant="t1")  # type: ignore[attr-defined]
    assert r.text == "answer(second answer(first hi) HI)"
    assert r.outputs["shout"] == "HI"
    assert [h.step for h in r.hops] == ["a", "b"]
    req = fb.calls[0]
    assert req.user == "u1" and req.tenant == "t1" and req.step == "a"
    assert req.params.max_tokens == 9 and req.template and req.template.startswith("t/a@")
    d = r.to_dict()
    assert set(d) >= {"text", "model", "usage", "latency_ms", "decisions", "steps"}


def test_routes_pick_branch() -> None:
    _, p = _pipe(
        steps=[
            {"name": "classify", "prompt": "Classify {input}", "output": "topic"},
            {"name": "billing", "prompt": "billing {input}"},
            {"name": "general", "prompt": "general {input}"},
        ],
        routes=[
            {
                "from": "classify",
                "key": "topic",
                "cases": {"billing": "billing"},
                "default": "general",
            }
        ],
    )
    assert p.invoke("refund please").hops[-1].step == "billing"  # type: ignore[attr-defined]
    assert p.invoke("hello").hops[-1].step == "general"  # type: ignore[attr-defined]


def test_stream_yields_tokens_steps_and_result() -> None:
    _, p = _pipe(steps=[{"name": "a", "prompt": "x {input}"}])
    events = list(p.stream("y z"))  # type: ignore[attr-defined]
    tokens = "".join(e.text for e in events if isinstance(e, TokenEvent))
    assert tokens == "answer(x y z)"
    assert any(isinstance(e, StepEvent) and e.step == "a" for e in events)
    assert isinstance(events[-1], Result) and events[-1].text == tokens
    assert events[-1].ttft_ms is not None


async def test_abatch_keeps_order_and_runs_concurrently() -> None:
    fb = FakeBackend(lambda r: r.last_user_text, delay=0.01)
    p = pipeline("b", backend=fb, steps=[{"name": "a", "prompt": "{input}"}])
    inputs = [f"q{i}" for i in range(40)]
    results = await p.abatch(inputs, concurrency=16)
    assert [r.text for r in results] == inputs  # type: ignore[union-attr]


async def test_abatch_return_exceptions() -> None:
    _, p = _pipe(steps=[{"name": "s", "function": "tests.core.steps_fixture:broken"}])
    out = await p.abatch(["a", "b"], return_exceptions=True)  # type: ignore[attr-defined]
    assert all(isinstance(o, StepError) for o in out)


def test_step_error_wraps_cause() -> None:
    _, p = _pipe(steps=[{"name": "s", "function": "tests.core.steps_fixture:broken"}])
    with pytest.raises(StepError, match="step 's' raised ValueError") as err:
        p.invoke("x")  # type: ignore[attr-defined]
    assert isinstance(err.value.__cause__, ValueError)


def test_bad_inputs() -> None:
    _, p = _pipe(steps=[{"name": "a", "prompt": "{input}"}])
    with pytest.raises(InvalidRequestError, match="text or a mapping"):
        p.invoke(42)  # type: ignore[attr-defined]
    with pytest.raises(InvalidRequestError, match="'input' key"):
        p.invoke({"question": "x"})  # type: ignore[attr-defined]
    with pytest.raises(InvalidRequestError, match="timeout"):
        p.invoke("x", timeout=0)  # type: ignore[attr-defined]


def test_graph_is_langgraph_with_checkpointer() -> None:
    saver = InMemorySaver()
    p = pipeline(
        "c", backend=FakeBackend(), steps=[{"name": "a", "prompt": "{input}"}], checkpointer=saver
    )
    p.invoke("hello", thread_id="th-1")
    snap = p.graph.get_state({"configurable": {"thread_id": "th-1"}})
    assert snap.values["a"] == "echo: hello"
    assert "a" in p.graph.get_graph().nodes


async def test_span_tree_under_concurrency(spans: SpanCapture) -> None:
    p = pipeline(
        "conc",
        backend=FakeBackend(delay=0.005),
        steps=[{"name": "a", "prompt": "{input}"}, {"name": "b", "prompt": "{a}"}],
        middleware=["noop"],
    )
    results = await asyncio.gather(*(p.ainvoke(f"q{i}") for i in range(8)))
    roots = spans.by_name("pipeline conc")
    assert len(roots) == 8
    by_id = {s.context.span_id: s for s in spans.spans()}
    for chat in spans.by_name("chat "):
        chain = []
        cur = chat
        while cur.parent is not None and cur.parent.span_id in by_id:
            cur = by_id[cur.parent.span_id]
            chain.append(cur.name.split(" ")[0])
        assert chain == ["middleware", "step", "pipeline"]
    trace_ids = {r.trace_id for r in results}
    assert len(trace_ids) == 8
