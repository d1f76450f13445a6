"""Hostile and careless request bodies: each gets an OpenAI-shaped 4xx naming the field,
never a 500 (issue 20: every case that gave a 500, a wrong answer or a megabyte echo).

Over FakeBackend through the ASGI app (no server: the parsing is what is under test); the
routes and methods table also runs against a real uvicorn server.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from flowopt import pipeline
from flowopt.gateway._background import BackgroundServer
from flowopt.gateway._body import MAX_DEPTH
from flowopt.gateway.app import create_app
from flowopt.gateway.errors import SOURCE_HEADER
from flowopt.spec import GatewaySpec
from flowopt.testing import FakeBackend

JSON = {"content-type": "application/json"}
USER = [{"role": "user", "content": "hi"}]


def _pipe(fb: FakeBackend | None = None) -> Any:
    return pipeline("unit", backend=fb or FakeBackend(), steps=[{"name": "a", "prompt": "{input}"}])


def _with(**fields: Any) -> bytes:
    return json.dumps({"messages": USER, **fields}).encode()


def _nested(depth: int) -> bytes:
    return b'{"messages": [{"role": "user", "content": "x"}], "x": ' + (
        b"[" * depth + b"]" * depth + b"}"
    )


def assert_openai_error(r: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers[SOURCE_HEADER] == "flowopt"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert err["param"] == param
    return err  # type: ignore[no-any-return]


# (name, body bytes, the param the 400 must name)
CASES: list[tuple[str, bytes, str | None]] = [
    ("lone surrogate in content", _with().replace(b'"hi"', b'"\\ud800"'), "messages[0].content"),
    (
        "lone surrogate in a key",
        b'{"messages": [{"role": "user", "content": "x"}], "\\udc00": 1}',
        None,
    ),
    ("lone surrogate in extra", _with(top_k="\ud800"), "top_k"),
    ("1000 deep", _nested(1000), "x" + "[0]" * (MAX_DEPTH - 1)),
    ("max depth + 1", _nested(MAX_DEPTH), "x" + "[0]" * (MAX_DEPTH - 1)),
    ("response_format string", _with(response_format="json"), "response_format"),
    ("response_format list", _with(response_format=[{"type": "json_object"}]), "response_format"),
    (
        "role list",
        json.dumps({"messages": [{"role": ["user"], "content": "x"}]}).encode(),
        "messages[0].role",
    ),
    (
        "role object",
        json.dumps({"messages": [{"role": {"a": 1}, "content": "x"}]}).encode(),
        "messages[0].role",
    ),
    (
        "content number",
        json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(),
        "messages[0].content",
    ),
    ("max_tokens Infinity", _with()[:-1] + b', "max_tokens": Infinity}', "max_tokens"),
    ("temperature NaN", _with()[:-1] + b', "temperature": NaN}', "temperature"),
    ("seed -Infinity", _with()[:-1] + b', "seed": -Infinity}', "seed"),
    ("max_tokens 1e400", _with()[:-1] + b', "max_tokens": 1e400}', "max_tokens"),
    ("integer past 64 bits", _with()[:-1] + b', "max_tokens": ' + b"9" * 30 + b"}", "max_tokens"),
    ("stream 'false'", _with(stream="false"), "stream"),
    ("stream 1", _with(stream=1), "stream"),
    (
        "include_usage 'yes'",
        _with(stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
    ),
    ("temperature string", _with(temperature="hot"), "temperature"),
    ("temperature bool", _with(temperature=True), "temperature"),
    ("max_tokens float", _with(max_tokens=1.5), "max_tokens"),
    ("stop number", _with(stop=5), "stop"),
    ("stop list of numbers", _with(stop=[1, 2]), "stop"),
    ("tools object", _with(tools={"type": "function"}), "tools"),
    ("tool_choice number", _with(tool_choice=3), "tool_choice"),
    ("logprobs string", _with(logprobs="true"), "logprobs"),
    ("n string", _with(n="2"), "n"),
    ("model number", _with(model=5), "model"),
    ("messages object", json.dumps({"messages": {"role": "user"}}).encode(), "messages"),
    (
        "name list",
        json.dumps({"messages": [{"role": "user", "content": "x", "name": []}]}).encode(),
        "messages[0].name",
    ),
]


@pytest.mark.parametrize(("name", "body", "param"), CASES, ids=[c[0] for c in CASES])
async def test_a_malformed_body_is_a_400_naming_the_field(
    name: str, body: bytes, param: str | None
) -> None:
    fb = FakeBackend()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(_pipe(fb))), base_url="http://gw"
    ) as c:
        r = await c.post("/v1/chat/completions", content=body, headers=JSON)
    assert_openai_error(r, 400, param)
    assert fb.calls == []  # refused before anything reached the backend


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (json.dumps({"prompt": ["a", "b"]}).encode(), "prompt"),
        (json.dumps({"prompt": "x", "logprobs": "3"}).encode(), "logprobs"),
        (b'{"prompt": "\\ud83d"}', "prompt"),
        (b'{"prompt": "x", "max_tokens": Infinity}', "max_tokens"),
    ],
)
async def test_completions_refuse_the_same_way(body: bytes, param: str) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(_pipe())), base_url="http://gw"
    ) as c:
        r = await c.post("/v1/completions", content=body, headers=JSON)
    assert_openai_error(r, 400, param)


async def test_a_body_at_the_maximum_depth_is_served() -> None:
    body = _nested(MAX_DEPTH - 1)  # the object is level 1: MAX_DEPTH levels in all
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(_pipe())), base_url="http://gw"
    ) as c:
        r = await c.post("/v1/chat/completions", content=body, headers=JSON)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
async def test_a_body_that_does_not_say_it_is_json_is_415(content_type: str | None) -> None:
    """What a web page can POST cross-site without a CORS preflight is never parsed."""
    fb = FakeBackend()
    headers = {"content-type": content_type} if content_type else {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(_pipe(fb))), base_url="http://gw"
    ) as c:
        for route in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            r = await c.post(route, content=_with(prompt="x"), headers=headers)
            err = assert_openai_error(r, 415, "Content-Type")
            assert err["code"] == "unsupported_media_type"
        ok = await c.post(
            "/v1/chat/completions",
            content=_with(),
            headers={"content-type": "application/json; charset=utf-8"},
        )
    assert ok.status_code == 200
    assert len(fb.calls) == 1


async def test_echoed_values_are_truncated() -> None:
    huge = "m" * 1_000_000
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(_pipe())), base_url="http://gw"
    ) as c:
        missing = await c.post("/v1/chat/completions", content=_with(model=huge), headers=JSON)
        wrong = await c.post("/v1/chat/completions", content=_with(stop={"k": huge}), headers=JSON)
    assert missing.status_code == 404 and len(missing.content) < 2000
    assert_openai_error(wrong, 400, "stop")
    assert len(wrong.content) < 2000


def test_unknown_routes_and_methods_are_openai_shaped_on_a_real_server() -> None:
    app = create_app(_pipe())
    with BackgroundServer(app) as server, httpx.Client(base_url=server.base_url) as c:
        err = assert_openai_error(c.get("/v1/nothing"), 404, None)
        assert err["code"] == "not_found"
        err = assert_openai_error(c.post("/v2/chat/completions", json={}), 404, None)
        for method, path in [
            ("GET", "/v1/chat/completions"),
            ("PUT", "/v1/completions"),
            ("DELETE", "/v1/embeddings"),
            ("POST", "/v1/models"),
        ]:
            r = c.request(method, path)
            err = assert_openai_error(r, 405, None)
            assert err["code"] == "method_not_allowed" and r.headers["allow"]


async def test_the_in_flight_cap_answers_503_with_retry_after() -> None:
    """Past ``max_in_flight`` requests being answered, the next is refused at once."""
    import asyncio

    from flowopt.types import Request, Response

    release = asyncio.Event()
    entered = asyncio.Event()

    class FakeBlockingBackend(FakeBackend):
        async def generate(self, request: Request) -> Response:
            entered.set()
            await release.wait()
            return await super().generate(request)

    app = create_app(_pipe(FakeBlockingBackend()), GatewaySpec(max_in_flight=1))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        first = asyncio.ensure_future(c.post("/v1/chat/completions", content=_with(), headers=JSON))
        await entered.wait()
        second = await c.post("/v1/chat/completions", content=_with(), headers=JSON)
        health = await c.get("/health")  # the cap is on generation work only
        release.set()
        done = await first
    err = assert_openai_error(second, 503, None)
    assert err["code"] == "overloaded" and second.headers["retry-after"] == "1"
    assert health.status_code == 200 and done.status_code == 200
