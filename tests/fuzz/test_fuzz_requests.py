"""Property: any request body, JSON or not, gets a 2xx or an OpenAI-shaped 4xx from the
gateway's generation routes, never a 5xx (issue 20).

Bodies are drawn three ways: any JSON value; a valid chat or completion body with one
field (or one message's field) replaced by any JSON value, lone surrogates, NaN and
Infinity included; and the bytes of a valid body with hostile bytes spliced in. Each goes
through the real ASGI app over FakeBackend (no model: the parsing is under test).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st
from tests.fuzz.fuzz_budget import budget, record

from flowopt import pipeline
from flowopt.gateway._wire import _OWN
from flowopt.gateway.app import create_app
from flowopt.testing import FakeBackend

JSON = {"content-type": "application/json"}
ROUTES = ("/v1/chat/completions", "/v1/completions")

_chars = st.characters(codec=None, categories=["L", "N", "P", "S", "Z", "C", "Cs"])
_text = st.text(alphabet=_chars, max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _text
    | st.sampled_from(["true", "false", "user", "json_object", "", "\ud800"])
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=16,
)
# Every field the gateway reads itself, plus two it forwards: the ones worth aiming at.
FIELDS = [*sorted(_OWN), "n", "top_k"]
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id"]
VALID = {"messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "max_tokens": 4}


def _dump(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    way = draw(st.sampled_from(["any", "field", "message", "bytes", "deep"]))
    if way == "any":
        return _dump(draw(json_values))
    body: dict[str, Any] = json.loads(json.dumps(VALID))
    if way == "field":
        body[draw(st.sampled_from(FIELDS))] = draw(json_values)
        return _dump(body)
    if way == "message":
        body["messages"][0][draw(st.sampled_from(MESSAGE_FIELDS))] = draw(json_values)
        return _dump(body)
    if way == "deep":
        depth = draw(st.integers(min_value=1, max_value=1500))
        return _dump(VALID)[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}"
    raw = bytearray(_dump(body))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        piece = draw(
            st.sampled_from(
                [
                    b"\\ud800",
                    b"NaN",
                    b"Infinity",
                    b"-",
                    b"{",
                    b"[",
                    b'"',
                    b"\xff",
                    b"\x00",
                    b"1e999",
                ]
            )
            | st.binary(max_size=4)
        )
        raw[at:at] = piece
    return bytes(raw)


def test_any_body_is_a_2xx_or_an_openai_shaped_4xx() -> None:
    app = create_app(
        pipeline("fuzz", backend=FakeBackend(), steps=[{"name": "a", "prompt": "{input}"}])
    )
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")

    @budget
    @given(body=bodies(), route=st.sampled_from(ROUTES))
    def check(body: bytes, route: str) -> None:
        r = loop.run_until_complete(client.post(route, content=body, headers=JSON))
        record("request", body, str(r.status_code))
        assert r.status_code < 500, (body[:300], r.text[:300])
        if r.status_code >= 400:
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"}, err
            assert isinstance(err["message"], str) and len(r.content) < 4096
        assert b"internal_error" not in r.content

    try:
        check()
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
