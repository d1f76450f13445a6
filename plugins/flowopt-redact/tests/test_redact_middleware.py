"""The ``redact`` middleware in a flowopt stack, against flowopt.testing.FakeBackend (a
fake: it records what it was sent, which is exactly what these tests need to see). The
real-server run is in test_redact_integration.py."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from flowopt import Request, Use, pipeline, registry
from flowopt.cli import cli
from flowopt.errors import BackendUnavailable, ConfigError
from flowopt.middleware.base import CallNext, build_stack, traced_backend
from flowopt.testing import FakeBackend, SpanCapture, run_middleware_conformance

from flowopt_redact import Redact

SECRET = "Mail jane.doe@example.com or call +44 20 7946 0958 about order #12345."
REDACTED = "Mail [EMAIL] or call [PHONE] about order #12345."


def _terminal(backend: FakeBackend) -> CallNext:
    return traced_backend(backend, name="fake")


def _stack(mw: Any, backend: FakeBackend) -> CallNext:
    return build_stack([("redact", mw)], _terminal(backend))


async def test_conformance() -> None:
    await run_middleware_conformance(lambda: Redact(["email", "phone", "card", "iban"]))


async def test_backend_sees_placeholders_only() -> None:
    backend = FakeBackend()
    request = Request.chat(
        [
            {"role": "system", "content": "Support desk. Escalations: boss@corp.example"},
            {"role": "user", "content": SECRET},
            {"role": "assistant", "content": "Noted your number 555-123-4567."},
            {"role": "user", "content": "thanks"},
        ]
    )
    resp = await _stack(Redact(), backend)(request)
    (sent,) = backend.calls
    assert [m.content for m in sent.messages] == [
        "Support desk. Escalations: [EMAIL]",
        REDACTED,
        "Noted your number [PHONE].",
        "thanks",
    ]
    assert [m.role for m in sent.messages] == ["system", "user", "assistant", "user"]
    (decision,) = resp.decisions
    assert decision.middleware == "redact" and decision.action == "redacted"
    assert dict(decision.detail) == {"total": 4, "email": 2, "phone": 2}


async def test_caller_request_is_not_changed() -> None:
    backend = FakeBackend()
    request = Request.chat(SECRET, tenant="t1", user="u1", metadata={"k": "v"})
    await _stack(Redact(), backend)(request)
    assert request.messages[0].content == SECRET  # frozen: the caller's copy is intact
    (sent,) = backend.calls
    assert sent is not request
    # Everything but the content is carried over unchanged.
    assert (sent.request_id, sent.tenant, sent.user, dict(sent.metadata)) == (
        request.request_id,
        "t1",
        "u1",
        {"k": "v"},
    )
    assert sent.params == request.params


async def test_clean_request_passes_through_as_the_same_object() -> None:
    backend = FakeBackend()
    request = Request.chat("What is new in version 1.2.3, released 2024-01-15?")
    resp = await _stack(Redact(), backend)(request)
    assert backend.calls == [request] and backend.calls[0] is request
    (decision,) = resp.decisions
    assert decision.action == "clean"
    assert dict(decision.detail) == {"total": 0, "email": 0, "phone": 0}


async def test_completion_prompt() -> None:
    backend = FakeBackend(lambda r: "ok")
    resp = await _stack(Redact(), backend)(Request(prompt=SECRET))
    (sent,) = backend.calls
    assert sent.prompt == REDACTED and sent.kind == "completion"
    assert resp.decisions[0].detail["total"] == 2


async def test_streamed_request() -> None:
    backend = FakeBackend()
    resp = await _stack(Redact(), backend)(Request.chat(SECRET, stream=True))
    assert resp.stream is not None and not resp.stream.done  # still streaming: not buffered
    chunks = [c.text async for c in resp.stream]
    final = resp.stream.response
    assert final is not None
    assert "".join(chunks) == final.text == f"echo: {REDACTED}"
    assert [d.action for d in final.decisions] == ["redacted"]


async def test_decision_becomes_span_attributes_without_values(spans: SpanCapture) -> None:
    await _stack(Redact(["email", "phone", "card"]), FakeBackend())(Request.chat(SECRET))
    (span,) = spans.by_name("middleware redact")
    attrs = dict(span.attributes or {})
    assert attrs == {
        "flowopt.redact.action": "redacted",
        "flowopt.redact.total": 2,
        "flowopt.redact.email": 1,
        "flowopt.redact.phone": 1,
        "flowopt.redact.card": 0,
    }
    for s in spans.spans():  # no span anywhere carries a redacted value
        for value in (s.attributes or {}).values():
            assert "jane.doe" not in str(value) and "7946" not in str(value)


async def test_streamed_span_gets_the_decision_when_the_stream_ends(spans: SpanCapture) -> None:
    resp = await _stack(Redact(), FakeBackend())(Request.chat(SECRET, stream=True))
    assert not spans.by_name("middleware redact")  # ends with the stream, not before
    await resp.complete()
    (span,) = spans.by_name("middleware redact")
    assert (span.attributes or {})["flowopt.redact.total"] == 2


async def test_backend_error_propagates_typed() -> None:
    failing = FakeBackend(fail=BackendUnavailable("down", endpoint="fake://down"))
    with pytest.raises(BackendUnavailable):
        await _stack(Redact(), failing)(Request.chat(SECRET))
    assert failing.calls[0].messages[0].content == REDACTED  # redacted even when it fails


async def test_redacting_twice_is_a_no_op() -> None:
    backend = FakeBackend()
    stack = build_stack([("redact", Redact()), ("again", Redact())], _terminal(backend))
    resp = await stack(Request.chat(SECRET))
    assert [d.action for d in resp.decisions] == ["clean", "redacted"]  # inner one first
    assert backend.calls[0].messages[0].content == REDACTED


@pytest.mark.parametrize(
    ("entry", "kinds"),
    [
        ("redact", ("email", "phone")),
        ({"redact": ["email", "card"]}, ("email", "card")),
        ({"redact": "iban"}, ("iban",)),
        ({"redact": "all"}, ("email", "phone", "card", "iban")),
        ({"redact": {"kinds": ["phone"], "patterns": {"emp": r"EMP-\d+"}}}, ("emp", "phone")),
    ],
)
def test_yaml_forms(entry: object, kinds: tuple[str, ...]) -> None:
    use = Use.parse(entry)
    mw = use.instantiate(registry.middleware.load("redact"), where="test")
    assert isinstance(mw, Redact) and mw.kinds == kinds


def test_bad_option_is_a_config_error_at_build_time() -> None:
    with pytest.raises(ConfigError, match="did you mean 'phone'"):
        pipeline(
            "bad",
            backend="fake",
            middleware=[{"redact": ["email", "phnoe"]}],
            steps=[{"name": "a", "prompt": "{input}"}],
        )
    # an unknown option or a wrong type is caught by RedactOptions when the spec is
    # validated, with its path; from Python, when the middleware is built
    with pytest.raises(ConfigError, match=r"middleware\[0\]\.redact\.placeholders"):
        pipeline(
            "bad",
            backend="fake",
            middleware=[{"redact": {"placeholders": "x"}}],
            steps=[{"name": "a", "prompt": "{input}"}],
        )
    with pytest.raises(ConfigError, match="rejected its options: field 'patterns'"):
        Redact(patterns=["not", "a", "mapping"])


def test_registered_by_entry_point() -> None:
    entry = registry.middleware.get("redact")
    assert entry.distribution == "flowopt-redact"
    assert entry.value == "flowopt_redact.middleware:Redact"
    assert entry.load() is Redact


def test_plugins_list_shows_the_distribution() -> None:
    out = CliRunner().invoke(cli, ["plugins", "list"])
    assert out.exit_code == 0, out.output
    (line,) = [ln for ln in out.output.splitlines() if ln.strip().startswith("redact ")]
    assert "flowopt_redact.middleware:Redact" in line and "(flowopt-redact)" in line


async def test_in_a_python_pipeline() -> None:
    backend = FakeBackend()
    pipe = pipeline(
        "redacting",
        backend=backend,
        middleware=[{"redact": ["email", "phone"]}],
        steps=[{"name": "answer", "prompt": "Customer says: {input}"}],
    )
    async with pipe:
        result = await pipe.ainvoke(SECRET)
    assert result.text == f"echo: Customer says: {REDACTED}"
    assert [(d.middleware, d.action) for d in result.decisions] == [("redact", "redacted")]
