"""Unit tests for the frozen value types: bad input fails clearly at construction."""

from __future__ import annotations

import dataclasses

import pytest

from flowopt import InvalidRequestError, Message, Params, Request


def test_request_from_text_and_dicts() -> None:
    r = Request.chat("hi", tenant="t")
    assert r.messages == (Message("user", "hi"),)
    r2 = Request.chat([{"role": "system", "content": "s"}, ("user", "q")])
    assert r2.system_prompt == "s"
    assert r2.last_user_text == "q"
    assert r2.kind == "chat"
    assert Request(prompt="p").kind == "completion"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "needs messages"),
        ({"messages": (Message("user", "a"),), "prompt": "b"}, "both messages and a prompt"),
    ],
)
def test_request_shape_errors(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidRequestError, match=fragment):
        Request(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"role": "robot", "content": "x"}, "role 'robot'"),
        ({"content": "x"}, "needs 'role' and 'content'"),
        ({"role": "user", "content": 3}, "must be a string"),
        (42, "cannot read a message"),
    ],
)
def test_malformed_messages(value: object, fragment: str) -> None:
    with pytest.raises(InvalidRequestError, match=fragment) as err:
        Request.chat([value])
    assert err.value.hint  # every error says how to fix it
    assert "[flowopt.invalid_request]" in str(err.value)


def test_messages_must_be_a_list() -> None:
    with pytest.raises(InvalidRequestError, match="must be a list"):
        Request.chat(42)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"temperature": 3.0}, "outside"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_logprobs": 50}, "top_logprobs"),
    ],
)
def test_params_validation(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidRequestError, match=fragment):
        Params(**kwargs)  # type: ignore[arg-type]


def test_frozen_and_replace() -> None:
    r = Request.chat("hi", params={"temperature": 0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.stream = True  # type: ignore[misc]
    r2 = r.with_params(max_tokens=5)
    assert r2.params.max_tokens == 5 and r.params.max_tokens is None
    assert r2.request_id == r.request_id
    assert not r.params.is_sampled and Params().is_sampled
    with pytest.raises(TypeError):
        r.metadata["x"] = 1  # type: ignore[index]


def test_content_hash_ignores_identity_not_content() -> None:
    a = Request.chat("q", tenant="a", params={"temperature": 0})
    b = Request.chat("q", tenant="b", params={"temperature": 0})
    c = Request.chat("q", tenant="a", params={"temperature": 0.5})
    assert a.content_hash() == b.content_hash()
    assert a.content_hash() != c.content_hash()


def test_pinned_to_is_replace_with_the_route_pinned() -> None:
    """The hot path's field-by-field copy equals what ``dataclasses.replace`` makes, keeps
    every field (the request id included) and leaves the original alone."""
    req = Request.chat(
        "hi",
        tenant="t",
        user="u",
        metadata={"k": [1, 2]},
        avoid={"http://e": 5.0},
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        params={"temperature": 0.5},
    )
    pinned = req.pinned_to("strong")
    assert pinned == dataclasses.replace(req, route="strong", pinned=True)
    assert all(
        getattr(pinned, f.name) is getattr(req, f.name)
        for f in dataclasses.fields(Request)
        if f.name not in ("route", "pinned")
    )
    assert (req.route, req.pinned) == (None, False)
    assert pinned.pinned_to("strong") is pinned
    assert pinned.routed("weak") is pinned  # a pin holds
