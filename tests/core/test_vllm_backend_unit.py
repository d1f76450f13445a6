"""VLLMBackend against httpx.MockTransport (a fake transport) for failure shapes that a real
server cannot be made to produce on demand. The same paths run against the real server in
tests/integration and through the fault proxy in tests/resilience."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from flowopt import (
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    IncompleteStream,
    Request,
    VLLMBackend,
)

URL = "http://fake-vllm:8000"
NaN = float("nan")
MODELS = {"data": [{"id": "m", "root": "/models/m", "max_model_len": 2048}]}


def _backend(handler: Callable[[httpx.Request], httpx.Response], **kw: object) -> VLLMBackend:
    return VLLMBackend(URL + "/v1", model="m", transport=httpx.MockTransport(handler), **kw)  # type: ignore[arg-type]


def _ok_body(text: str = "hello") -> dict[str, object]:
    return {
        "id": "cmpl-1",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }


async def test_chat_ok_and_payload() -> None:
    seen: list[dict[str, object]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(json.loads(req.content))
        assert req.url.path == "/v1/chat/completions"
        return httpx.Response(200, json=_ok_body())

    b = _backend(handler)
    r = await b.generate(
        Request.chat(
            "hi", params={"temperature": 0, "max_tokens": 5, "stop": ["\n"], "extra": {"top_k": 3}}
        )
    )
    assert r.text == "hello" and r.usage.input_tokens == 3 and r.endpoint == URL
    assert seen[0]["temperature"] == 0 and seen[0]["stop"] == ["\n"] and seen[0]["top_k"] == 3
    assert seen[0]["model"] == "m"


@pytest.mark.parametrize(
    ("response", "error", "fragment"),
    [
        (httpx.Response(200, text="<html>oops</html>"), BackendProtocolError, "not JSON"),
        (httpx.Response(200, json={"choices": []}), BackendProtocolError, "no 'choices'"),
        (httpx.Response(200, json=[1, 2]), BackendProtocolError, "expected a JSON object"),
        (
            httpx.Response(200, json={"choices": [{"message": None}]}),
            BackendProtocolError,
            "message is missing",
        ),
        (httpx.Response(500, text="boom"), BackendHTTPError, "HTTP 500"),
    ],
)
async def test_garbage_gives_typed_error_naming_endpoint(
    response: httpx.Response, error: type[Exception], fragment: str
) -> None:
    b = _backend(lambda req: response)
    with pytest.raises(error, match=fragment) as err:
        await b.generate(Request.chat("hi"))
    assert URL in str(err.value)


async def test_429_retry_after_is_parsed() -> None:
    b = _backend(lambda req: httpx.Response(429, headers={"Retry-After": "2.5"}, text="slow"))
    with pytest.raises(BackendHTTPError) as err:
        await b.generate(Request.chat("hi"))
    assert err.value.status == 429 and err.value.retryable and err.value.retry_after == 2.5


async def test_400_is_not_retryable() -> None:
    b = _backend(lambda req: httpx.Response(400, text="bad param"))
    with pytest.raises(BackendHTTPError) as err:
        await b.generate(Request.chat("hi"))
    assert not err.value.retryable


async def test_connect_error_and_timeout() -> None:
    def refuse(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    with pytest.raises(BackendUnavailable, match="cannot connect"):
        await _backend(refuse).generate(Request.chat("hi"))

    def slow(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=req)

    with pytest.raises(BackendTimeout):
        await _backend(slow).generate(Request.chat("hi"))


def _sse(events: list[object], done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def _delta(text: str, finish: str | None = None) -> dict[str, object]:
    return {
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }


async def test_stream_ok_with_usage() -> None:
    body = _sse(
        [
            _delta("he"),
            _delta("llo", "stop"),
            {"model": "m", "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 2}},
        ]
    )
    b = _backend(lambda req: httpx.Response(200, content=body))
    r = await b.generate(Request.chat("hi", stream=True))
    assert r.stream is not None
    texts = [c.text async for c in r.stream]
    final = r.stream.response
    assert texts == ["he", "llo"] and final is not None
    assert final.text == "hello" and final.usage.output_tokens == 2
    assert final.finish_reason == "stop" and final.ttft_ms is not None


@pytest.mark.parametrize("split", [1, 3, 7, 10_000])
@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
async def test_stream_lines_split_anywhere(split: int, eol: str) -> None:
    """The SSE reader splits lines itself: events cut at any byte, any SSE line end, a
    final line without its end, a NaN orjson refuses and invalid UTF-8 all parse as
    ``aiter_lines`` + ``json.loads`` did."""
    events = [
        _delta("h\u00e9"),
        _delta("llo", "stop"),
        {"model": "m", "choices": [], "usage": {"prompt_tokens": 2}, "x": NaN},
    ]
    text = "".join(f"data: {json.dumps(e)}{eol}{eol}" for e in events) + "data: [DONE]"
    body = text.encode().replace(b"llo", b"ll\xff")
    parts = [body[i : i + split] for i in range(0, len(body), split)]

    async def chunks() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    b = _backend(lambda req: httpx.Response(200, content=chunks()))
    r = await b.generate(Request.chat("hi", stream=True))
    assert r.stream is not None
    texts = [c.text async for c in r.stream]
    final = r.stream.response
    assert texts == ["h\u00e9", "ll\ufffd"] and final is not None
    assert final.finish_reason == "stop" and final.usage.input_tokens == 2


async def test_stream_ready_counts_the_events_of_one_read() -> None:
    """The events of one read are parsed together and ``Stream.ready`` says how many
    more the stream holds (a relay writes them at once); a read's last says 0."""
    reads = [_sse([_delta("a")], done=False), _sse([_delta("b"), _delta("c"), _delta("d", "stop")])]

    async def chunks() -> AsyncIterator[bytes]:
        for part in reads:
            yield part

    b = _backend(lambda req: httpx.Response(200, content=chunks()))
    r = await b.generate(Request.chat("hi", stream=True))
    assert r.stream is not None
    seen = [(c.text, r.stream.ready) async for c in r.stream]
    assert seen == [("a", 0), ("b", 2), ("c", 1), ("d", 0)]
    assert r.stream.response is not None and r.stream.response.text == "abcd"


async def test_stream_error_event_fails_after_the_events_before_it() -> None:
    body = _sse([_delta("he"), _delta("ll"), {"error": {"message": "engine died"}}], done=False)
    b = _backend(lambda req: httpx.Response(200, content=body))
    r = await b.generate(Request.chat("hi", stream=True))
    assert r.stream is not None
    texts: list[str] = []
    with pytest.raises(IncompleteStream, match="mid-stream") as err:
        async for c in r.stream:
            texts.append(c.text)
    assert texts == ["he", "ll"] and err.value.partial_text == "hell"


async def test_stream_cut_is_incomplete_not_finished() -> None:
    body = _sse([_delta("he"), _delta("ll")], done=False)
    b = _backend(lambda req: httpx.Response(200, content=body))
    r = await b.generate(Request.chat("hi", stream=True))
    assert r.stream is not None
    with pytest.raises(IncompleteStream) as err:
        await r.complete()
    assert err.value.partial_text == "hell"
    assert r.stream.response is None


async def test_stream_garbage_event() -> None:
    body = b"data: {not json}\n\n"
    b = _backend(lambda req: httpx.Response(200, content=body))
    r = await b.generate(Request.chat("hi", stream=True))
    with pytest.raises(BackendProtocolError, match="not JSON"):
        await r.complete()


async def test_model_info_and_unknown_model() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=MODELS)

    info = await _backend(handler).model_info()
    assert info.id == "m" and info.identity.startswith("m@")
    other = VLLMBackend(URL, model="zzz", transport=httpx.MockTransport(handler))
    with pytest.raises(ConfigError, match="does not serve model 'zzz'"):
        await other.model_info()


async def test_least_outstanding_balancing() -> None:
    hits: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        hits.append(req.url.host)
        return httpx.Response(200, json=_ok_body())

    b = VLLMBackend(
        base_urls=["http://r1:1", "http://r2:1"], model="m", transport=httpx.MockTransport(handler)
    )
    # hold one stream open on a replica: the next requests must go to the other one
    body = _sse([_delta("x", "stop")])

    def mixed(req: httpx.Request) -> httpx.Response:
        if json.loads(req.content).get("stream"):
            return httpx.Response(200, content=body)
        return httpx.Response(200, json=_ok_body())

    held = VLLMBackend(
        base_urls=["http://r1:1", "http://r2:1"], model="m", transport=httpx.MockTransport(mixed)
    )
    s = await held.generate(Request.chat("hi", stream=True))
    busy = s.endpoint
    assert s.stream is not None
    for _ in range(3):
        r = await held.generate(Request.chat("hi"))  # non-stream, completes immediately
        assert r.endpoint != busy
    await s.stream.aclose()
    for _ in range(4):
        await b.generate(Request.chat("hi"))
    assert sorted(set(hits)) == ["r1", "r2"]


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="no scheme"):
        VLLMBackend("localhost:8000")
    with pytest.raises(ConfigError, match="timeout"):
        VLLMBackend("http://h", timeout=0)


async def test_seed_policy() -> None:
    sent: list[dict[str, object]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        sent.append(json.loads(req.content))
        return httpx.Response(200, json=_ok_body())

    seeded = Request.chat("hi", params={"seed": 7, "temperature": 0.5})
    await _backend(handler).generate(seeded)
    assert sent[-1]["seed"] == 7
    await _backend(handler, seed_policy="drop").generate(seeded)
    assert "seed" not in sent[-1]
    from flowopt import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="refuses per-request seeds"):
        await _backend(handler, seed_policy="reject").generate(seeded)
    with pytest.raises(ConfigError, match="seed_policy"):
        VLLMBackend(URL, seed_policy="maybe")
