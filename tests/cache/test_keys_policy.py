"""Unit tests: the partition key and the storability rules (no servers, no model)."""

from __future__ import annotations

import pytest

from flowopt.cache.keys import cache_key
from flowopt.cache.policy import (
    RegexPIIDetector,
    SkipReason,
    request_bypass_reason,
    response_skip_reason,
)
from flowopt.types import Message, Request, Response

G = {"temperature": 0.0}


def key(req: Request, model: str = "smollm2@aaa", scope: str = "tenant") -> tuple[str, str]:
    k = cache_key(req, model_identity=model, scope=scope)  # type: ignore[arg-type]
    return k.partition, k.exact


def test_same_request_same_keys() -> None:
    a = Request.chat("What is a stray loss?", params=G, tenant="t1")
    b = Request.chat("What is a stray loss?", params=G, tenant="t1", stream=True)
    assert key(a) == key(b)  # streaming is delivery, not content


@pytest.mark.parametrize(
    "other",
    [
        Request.chat("What is a stray loss?", params=G, tenant="t2"),
        Request.chat("What is a stray loss?", params={"temperature": 0.05}, tenant="t1"),
        Request.chat("What is a stray loss?", params={**G, "max_tokens": 10}, tenant="t1"),
        Request.chat("What is a stray loss?", params={**G, "stop": ["\n"]}, tenant="t1"),
        Request.chat("What is a stray loss?", params=G, tenant="t1", template="faq@2"),
        Request.chat(
            [Message("system", "Answer in French."), Message("user", "What is a stray loss?")],
            params=G,
            tenant="t1",
        ),
        Request.chat(
            [
                Message("user", "Tell me about transformers."),
                Message("assistant", "Which kind?"),
                Message("user", "What is a stray loss?"),
            ],
            params=G,
            tenant="t1",
        ),
        Request(
            prompt="What is a stray loss?", params=Request.chat("x", params=G).params, tenant="t1"
        ),
    ],
    ids=["tenant", "temperature", "max_tokens", "stop", "template", "system", "history", "kind"],
)
def test_every_boundary_changes_the_partition(other: Request) -> None:
    base = Request.chat("What is a stray loss?", params=G, tenant="t1")
    assert key(base)[0] != key(other)[0]
    assert key(base)[1] != key(other)[1]


def test_model_identity_and_scope_change_the_partition() -> None:
    r = Request.chat("q", params=G, tenant="t1", user="alice")
    assert key(r, model="smollm2@aaa")[0] != key(r, model="smollm2@bbb")[0]
    other_user = r.replace(user="bob")
    assert key(r)[0] == key(other_user)[0]  # tenant scope shares within the tenant
    assert key(r, scope="user")[0] != key(other_user, scope="user")[0]


def test_tenant_is_identity_not_text() -> None:
    k = cache_key(Request.chat("hello", params=G, tenant="acme"), model_identity="m")
    assert k.text == "hello"
    assert k.tenant == "acme"


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, SkipReason.SAMPLED),  # server default temperature is 1.0
        ({"temperature": 0.7}, SkipReason.SAMPLED),
        ({"temperature": 0.7, "seed": 3}, None),  # seeded sampling is reproducible
        ({"temperature": 0.1}, None),
        ({"temperature": 0.0, "extra": {"tools": [{"type": "function"}]}}, SkipReason.TOOLS),
    ],
)
def test_bypass_reasons(params: dict[str, object], reason: str | None) -> None:
    req = Request.chat("hi", params=params)
    assert request_bypass_reason(req, max_temperature=0.1) == reason


def test_tool_messages_bypass() -> None:
    req = Request.chat([Message("user", "weather?"), Message("tool", "{}")], params=G)
    assert request_bypass_reason(req, max_temperature=0.1) == SkipReason.TOOLS


def _resp(text: str, finish: str | None = "stop", **md: object) -> Response:
    return Response(text=text, model="m", finish_reason=finish, metadata=md)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (_resp("fine"), None),
        (_resp("cut", "length"), SkipReason.TRUNCATED),
        (_resp("cut", "aborted"), SkipReason.TRUNCATED),
        (_resp("", "tool_calls"), SkipReason.TOOL_CALL),
        (_resp("x", tool_calls=[{"id": 1}]), SkipReason.TOOL_CALL),
        (_resp(""), SkipReason.EMPTY),
        (_resp("Write to jane.doe@example.org"), SkipReason.PII),
    ],
)
def test_response_skip_reasons(response: Response, reason: str | None) -> None:
    req = Request.chat("q", params=G)
    got = response_skip_reason(req, response, [RegexPIIDetector()])
    assert (got[0] if got else None) == reason


def test_pii_in_the_question_also_blocks_storing() -> None:
    req = Request.chat("My card is 4111 1111 1111 1111, is it valid?", params=G)
    got = response_skip_reason(req, _resp("Yes."), [RegexPIIDetector()])
    assert got == (SkipReason.PII, "card")


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("mail me: a.b+c@mail.example.co.uk", ["email"]),
        ("call +44 20 7946 0958 today", ["phone"]),
        ("call (555) 123-4567", ["phone"]),
        ("card 4111-1111-1111-1111", ["card"]),
        ("SSN 078-05-1120", ["national_id"]),
        ("NI number AB 12 34 56 C", ["national_id"]),
        ("IBAN GB82 WEST 1234 5698 7654 32", ["national_id"]),
        ("order 1234567890123 shipped", []),  # fails Luhn: not a card
        ("The years 1914 and 1918 matter.", []),
        ("Python 3.11 was released in 2022.", []),
    ],
)
def test_regex_pii_detector(text: str, kinds: list[str]) -> None:
    assert RegexPIIDetector().detect(text) == kinds


def test_pii_detector_extra_patterns() -> None:
    det = RegexPIIDetector({"employee_id": r"EMP-\d{6}"})
    assert det.detect("ask EMP-123456") == ["employee_id"]
