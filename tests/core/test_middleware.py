"""Unit tests for the middleware stack: order, short-circuit, Use records, spans."""

from __future__ import annotations

from typing import ClassVar

import pytest

from flowopt import ConfigError, Decision, Request, Response, Use
from flowopt.middleware.base import CallNext, MiddlewareBase, build_stack, traced_backend
from flowopt.testing import FakeBackend, SpanCapture, run_middleware_conformance


class Tag(MiddlewareBase):
    name: ClassVar[str] = "tag"
    positional: ClassVar[str | None] = "label"

    def __init__(self, label: str = "x", log: list[str] | None = None) -> None:
        self.label = label
        self.log = log if log is not None else []

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        self.log.append(f"before {self.label}")
        resp = await call_next(request)
        self.log.append(f"after {self.label}")
        return resp.with_decision(Decision(self.label, "tagged"))


class ShortCircuit(MiddlewareBase):
    name: ClassVar[str] = "short"

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        return Response(text="from short", model="none")


async def test_outermost_first_order() -> None:
    log: list[str] = []
    backend = FakeBackend()
    handler = build_stack(
        [("a", Tag("a", log)), ("b", Tag("b", log))], traced_backend(backend, name="fake")
    )
    resp = await handler(Request.chat("q"))
    assert log == ["before a", "before b", "after b", "after a"]
    assert [d.middleware for d in resp.decisions] == ["b", "a"]


async def test_short_circuit_skips_backend() -> None:
    backend = FakeBackend()
    handler = build_stack([("s", ShortCircuit())], traced_backend(backend, name="fake"))
    resp = await handler(Request.chat("q"))
    assert resp.text == "from short" and backend.calls == []


async def test_decisions_reach_streamed_final_response() -> None:
    handler = build_stack([("t", Tag("t"))], traced_backend(FakeBackend(), name="fake"))
    resp = await handler(Request.chat("one two", stream=True))
    final = await resp.complete()
    assert final.text == "echo: one two"
    assert [d.action for d in final.decisions] == ["tagged"]


def test_use_parse_and_spec_round_trip() -> None:
    assert Use.parse("tag") == Use("tag")
    assert Use.parse({"tag": {"label": "y"}}) == Use("tag", label="y")
    assert Use.parse({"tag": "z"}).to_spec() == {"tag": "z"}
    assert Use.parse({"tag": None}) == Use("tag")
    with pytest.raises(ConfigError, match="exactly one key"):
        Use.parse({"a": 1, "b": 2})
    with pytest.raises(ConfigError, match="no YAML form"):
        Use(Tag()).to_spec()


def test_use_instantiate_positional_and_bad_options() -> None:
    mw = Use.parse({"tag": "short-form"}).instantiate(Tag, where="middleware[0]")
    assert mw.label == "short-form"
    with pytest.raises(ConfigError, match="rejected its options"):
        Use("tag", nope=1).instantiate(Tag, where="middleware[0]")
    with pytest.raises(ConfigError, match="takes no short-form value"):
        Use.parse({"short": 1}).instantiate(ShortCircuit, where="middleware[0]")


async def test_spans_nest_middleware_then_backend(spans: SpanCapture) -> None:
    handler = build_stack([("t", Tag("t"))], traced_backend(FakeBackend(), name="fake"))
    resp = await handler(Request.chat("q", stream=True))
    # a streamed call's spans end only when the stream does
    assert not spans.by_name("middleware t")
    await resp.complete()
    (mw,) = spans.by_name("middleware t")
    (chat,) = spans.by_name("chat fake-model")
    assert chat.parent is not None and chat.parent.span_id == mw.context.span_id
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.usage.output_tokens"] == 2
    assert mw.attributes is not None and mw.attributes["flowopt.t.action"] == "tagged"


async def test_builtin_middleware_conformance() -> None:
    from flowopt.middleware.builtin import Logging, NoOp

    await run_middleware_conformance(NoOp)
    await run_middleware_conformance(lambda: Logging("DEBUG"))
    await run_middleware_conformance(lambda: Tag("c"))
