"""``POST /v1/embeddings`` with the official ``openai`` client, over a real gateway (uvicorn in
a thread) in front of a FakeBackend pipeline: embeddings need no LLM, only the packaged
MiniLM, which is real here. The vectors are checked against ``MiniLMEmbedder`` called
directly, float against base64, and every refusal names its parameter."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from flowopt import pipeline
from flowopt.cache.embedder import MAX_LENGTH, MiniLMEmbedder
from flowopt.cache.middleware import CacheMiddleware
from flowopt.cache.stores.memory import MemoryStore
from flowopt.gateway._background import BackgroundServer
from flowopt.gateway._embeddings import MAX_INPUTS, TRUNCATED_HEADER
from flowopt.gateway.app import create_app
from flowopt.spec import GatewaySpec
from flowopt.testing import FakeBackend
from flowopt.testing.spans import SpanCapture

KEY = "sk-embed-0123456789"
MODEL = "all-MiniLM-L6-v2"
# Longest first: the route sorts by length for batching and must restore the order.
TEXTS = [
    "How do I reset my password if I no longer have access to my email account?",
    "Café naïve résumé — “quoted” ÄÖÜ ß",
    "日本語のテキストと English mixed",
    "What is the capital of France?",
    "hi",
]
LONG = " ".join(["a long question about many different things"] * 60)  # > 256 tokens


@pytest.fixture(scope="module")
def capture() -> SpanCapture:
    return SpanCapture()  # before the pipeline: its spans go to the global provider


@pytest.fixture(scope="module")
def base_url(capture: SpanCapture) -> Iterator[str]:
    pipe = pipeline("emb", backend=FakeBackend(), steps=[{"name": "a", "prompt": "{input}"}])
    settings = GatewaySpec(api_keys={"acme": KEY})  # type: ignore[dict-item]
    with BackgroundServer(create_app(pipe, settings)) as server:
        yield server.base_url


@pytest.fixture(scope="module")
def direct() -> MiniLMEmbedder:
    """An independent copy of the model, called directly."""
    emb = MiniLMEmbedder()
    emb.load()
    return emb


def _client(base_url: str, key: str | None = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key=key or "", max_retries=0)


def _cos(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.asarray((a * b).sum(-1))


def test_float_and_base64_agree_and_match_minilm(base_url: str, direct: MiniLMEmbedder) -> None:
    c = _client(base_url)
    floats = c.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert floats.object == "list" and floats.model == MODEL
    assert [d.index for d in floats.data] == list(range(len(TEXTS)))
    as_float = np.array([d.embedding for d in floats.data], dtype=np.float32)
    assert as_float.shape == (len(TEXTS), 384)

    raw64 = c.embeddings.create(model=MODEL, input=TEXTS, encoding_format="base64")
    as_b64 = np.stack(
        [np.frombuffer(base64.b64decode(str(d.embedding)), dtype="<f4") for d in raw64.data]
    )
    # float32 written in its shortest form parses back to the very same values
    assert np.array_equal(as_float, as_b64)

    # The client's default: it asks for base64 and decodes it itself.
    raw = c.embeddings.with_raw_response.create(model=MODEL, input=TEXTS)
    assert json.loads(raw.http_request.content)["encoding_format"] == "base64"
    as_default = np.array([d.embedding for d in raw.parse().data], dtype=np.float32)
    assert np.array_equal(as_default, as_float)

    # the same vectors as the model called directly, in the request's order
    assert _cos(as_float, direct.embed_many(TEXTS)).min() > 0.9999
    assert np.allclose(np.linalg.norm(as_float, axis=1), 1.0, atol=1e-4)
    tokens = sum(direct.count_tokens(TEXTS))
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == tokens
    assert raw.headers.get(TRUNCATED_HEADER) is None


def test_one_string_and_a_long_text(base_url: str, direct: MiniLMEmbedder) -> None:
    c = _client(base_url)
    one = c.embeddings.create(model=MODEL, input=TEXTS[3])
    assert len(one.data) == 1 and one.data[0].index == 0
    assert _cos(np.array(one.data[0].embedding), direct.embed(TEXTS[3])) > 0.9999
    # longer than the model reads: truncated to 256 tokens, and the header says how many
    raw = c.embeddings.with_raw_response.create(model=MODEL, input=[TEXTS[4], LONG])
    assert raw.headers[TRUNCATED_HEADER] == "1"
    out = raw.parse()
    assert out.usage.prompt_tokens == MAX_LENGTH + direct.count_tokens([TEXTS[4]])[0]
    assert _cos(np.array(out.data[1].embedding), direct.embed(LONG)) > 0.9999


def test_a_batch_of_many_keeps_its_order(base_url: str, direct: MiniLMEmbedder) -> None:
    texts = [f"question number {i}: {'why ' * (i % 17)}is the sky blue?" for i in range(150)]
    out = _client(base_url).embeddings.create(model=MODEL, input=texts)
    got = np.array([d.embedding for d in out.data], dtype=np.float32)
    assert [d.index for d in out.data] == list(range(150))
    assert _cos(got, direct.embed_many(texts)).min() > 0.9999


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", ""]}, "input"),
        ({"input": ["ok", 3]}, "input"),
        ({"input": [101, 2023, 102]}, "input"),  # token ids
        ({"input": [[101, 2023, 102]]}, "input"),
        ({"input": ["a"] * (MAX_INPUTS + 1)}, "input"),
        ({"input": "ok", "dimensions": 256}, "dimensions"),
        ({"input": "ok", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "ok", "user": 7}, "user"),
    ],
)
def test_bad_requests_name_the_param(base_url: str, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _client(base_url).embeddings.create(model=MODEL, **kwargs)
    assert err.value.status_code == 400
    assert err.value.param == param, err.value.message
    if kwargs["input"] == [101, 2023, 102]:
        assert "check_embedding_ctx_length=False" in err.value.message


def test_dimensions_equal_to_the_native_size_is_accepted(base_url: str) -> None:
    out = _client(base_url).embeddings.create(model=MODEL, input="ok", dimensions=384)
    assert len(out.data[0].embedding) == 384


def test_model_names(base_url: str) -> None:
    c = _client(base_url)
    with pytest.raises(openai.NotFoundError) as err:
        c.embeddings.create(model="text-embedding-3-small", input="ok")
    assert err.value.param == "model" and MODEL in err.value.message
    alias = c.embeddings.create(model="sentence-transformers/" + MODEL, input="ok")
    assert alias.model == "sentence-transformers/" + MODEL
    assert MODEL in [m.id for m in c.models.list()]
    with pytest.raises(openai.BadRequestError) as bad:  # not a chat model
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert bad.value.param == "model"


def test_auth_is_enforced(base_url: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        _client(base_url, key="sk-wrong-0123456789").embeddings.create(model=MODEL, input="ok")
    r = httpx.post(base_url + "/v1/embeddings", json={"model": MODEL, "input": "ok"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_metrics_and_spans(base_url: str, capture: SpanCapture) -> None:
    capture.clear()
    raw = _client(base_url).embeddings.with_raw_response.create(model=MODEL, input=TEXTS[:2])
    trace_id = int(raw.headers["x-flowopt-trace-id"], 16)
    metrics = httpx.get(base_url + "/metrics").text
    assert 'route="/v1/embeddings"' in metrics and 'status="200"' in metrics
    spans = [s for s in capture.spans() if s.context.trace_id == trace_id]
    server = next(s for s in spans if s.name == "POST /v1/embeddings")
    emb = next(s for s in spans if s.name == f"embeddings {MODEL}")
    assert emb.parent is not None and emb.parent.span_id == server.context.span_id
    attrs = dict(emb.attributes or {})
    assert attrs["gen_ai.operation.name"] == "embeddings"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.usage.input_tokens"] == raw.parse().usage.prompt_tokens
    assert attrs["flowopt.tenant"] == "acme"
    assert "flowopt.embeddings.input" not in attrs  # no content unless the spec says so


async def test_content_capture_and_the_cache_embedder_is_reused(capture: SpanCapture) -> None:
    emb = MiniLMEmbedder()
    cache = CacheMiddleware(
        store=MemoryStore(max_entries=16, dim=384), embedder=emb, verify=False, pii=False
    )
    pipe = pipeline(
        "emb-cache",
        backend=FakeBackend(),
        middleware=[cache],
        steps=[{"name": "a", "prompt": "{input}"}],
        tracing={"capture_content": True},
    )
    app = create_app(pipe)
    await pipe.start()  # what the app's lifespan does under a server
    assert app.state.gateway.embeddings.embedder() is emb
    capture.clear()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        r = await c.post("/v1/embeddings", json={"model": MODEL, "input": ["secret text"]})
    assert r.status_code == 200, r.text
    span = next(s for s in capture.spans() if s.name == f"embeddings {MODEL}")
    assert json.loads(str((span.attributes or {})["flowopt.embeddings.input"])) == ["secret text"]
    await pipe.aclose()


async def test_the_loop_stays_free_and_batches_take_turns() -> None:
    pipe = pipeline("emb-loop", backend=FakeBackend(), steps=[{"name": "a", "prompt": "{input}"}])
    app = create_app(pipe)
    texts = [f"sentence {i} about the weather and the sea and the mountains" for i in range(512)]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=120
    ) as c:
        await c.post("/v1/embeddings", json={"input": "warm up"})  # loads the model
        done: dict[str, float] = {}

        async def embed() -> None:
            r = await c.post("/v1/embeddings", json={"input": texts})
            assert r.status_code == 200
            done["embed"] = time.perf_counter()

        job = asyncio.create_task(embed())
        await asyncio.sleep(0.05)
        assert (await c.get("/health")).status_code == 200
        done["health"] = time.perf_counter()
        # a small request waits for one batch of the big one, not for all of it
        assert (await c.post("/v1/embeddings", json={"input": "quick"})).status_code == 200
        done["small"] = time.perf_counter()
        await job
    assert done["health"] < done["small"] < done["embed"]


def test_langchain_openai_embeddings(base_url: str) -> None:
    from langchain_openai import OpenAIEmbeddings

    lc = OpenAIEmbeddings(  # type: ignore[call-arg]
        model=MODEL,
        base_url=base_url + "/v1",
        api_key=KEY,
        check_embedding_ctx_length=False,  # send text, not tiktoken ids
    )
    docs = lc.embed_documents(TEXTS[:3])
    assert len(docs) == 3 and len(docs[0]) == 384
    assert _cos(np.array(lc.embed_query(TEXTS[0])), np.array(docs[0])) > 0.9999
