"""The OpenAI-compatible HTTP app: one pipeline behind ``/v1/*``.

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (JSON, or server-sent
events with ``stream: true``; usage in the last event with
``stream_options: {include_usage: true}``), ``POST /v1/embeddings`` (:mod:`._embeddings`),
``GET /v1/models``, ``GET /health``, ``GET /metrics``, and OpenAI's Files and Batches API
(``/v1/files``, ``/v1/batches``: :mod:`._batches`).

Each generation request: authenticate (API key -> tenant), read the body (refusing one
over ``gateway.max_body_bytes`` with 413 before it is read whole: :func:`read_body`), parse
it into a frozen :class:`~flowopt.types.Request`, join the caller's trace, and send the
request through the pipeline's middleware stack once (``Pipeline.acall``), or run the whole
graph when the client names the graph model. The graph runs on the whole chat (system
prompt, history, last user turn), with the call's sampling parameters over its answer
steps' and the call's deadline as the run's timeout (:meth:`Gateway._graph_run`). The work
is raced against the client's disconnect, so a client that leaves cancels the backend
request (see :mod:`flowopt.gateway._disconnect`).

Why Starlette and not FastAPI: the routes are few and fixed, and the gateway's budget is
about a millisecond per request; FastAPI's validation layer would spend it twice, since
flowopt's own types validate the request anyway. For the same reason the two generation
routes skip Starlette's router and its three middleware layers (:class:`GatewayApp`):
those wrap every ``send``, and a stream sends once per token.
"""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response as HTTPResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from flowopt._span_scope import activated
from flowopt.errors import RejectedError
from flowopt.gateway._batches import Batches
from flowopt.gateway._body import clip, read_body, read_json
from flowopt.gateway._disconnect import ClientLeft, DisconnectWatch, EventStreamResponse
from flowopt.gateway._embeddings import Embeddings
from flowopt.gateway._events import (
    Exchange,
    after,
    backend_events,
    graph_events,
    graph_response,
)
from flowopt.gateway._redact import install_redaction
from flowopt.gateway._wire import (
    Call,
    chat_chunk,
    chat_json,
    completion_json,
    dumps,
    parse_call,
)
from flowopt.gateway.auth import KeyRing
from flowopt.gateway.errors import HTTPProblem, problem_from
from flowopt.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from flowopt.gateway.models import ModelTable, Target
from flowopt.gateway.tracing import server_span
from flowopt.pipeline import Pipeline
from flowopt.spec import GatewaySpec
from flowopt.types import Response

__all__ = ["Gateway", "GatewayApp", "create_app", "read_body"]

_log = logging.getLogger("flowopt.gateway")
_JSON = "application/json"


class Gateway:
    """The state behind the routes: the pipeline, keys, model table and metrics."""

    def __init__(self, pipe: Pipeline, settings: GatewaySpec | None = None) -> None:
        settings = settings or pipe.spec.gateway or GatewaySpec()
        self.pipe = pipe
        self.settings = settings
        self.keys = KeyRing({t: k.get_secret_value() for t, k in settings.api_keys.items()})
        graph = (settings.graph_model or pipe.spec.name) if settings.expose_graph else None
        self.embeddings = Embeddings(self)  # POST /v1/embeddings
        self.batches = Batches(self)  # /v1/files, /v1/batches
        self.models = ModelTable(pipe.backends, graph, self.embeddings.models)
        self.metrics = GatewayMetrics()
        self._unobserve: Callable[[], None] | None = None
        if pipe.spec.speculate:  # speculated edges report each run to /metrics
            from flowopt.speculate import observe

            self._unobserve = observe(pipe, self.metrics.observe_speculation)
        self._max_body = settings.max_body_bytes
        # the pipeline's tracer: the SERVER span and the pipeline's spans share a provider
        self._tracer = pipe.tracing.tracer
        # Set by `flowopt serve`, which owns its process; an app embedded elsewhere
        # leaves the host process's garbage collector alone.
        self.freeze_heap = False

    # -- lifecycle ------------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.pipe.start()
        await self.models.refresh()
        await self.batches.start()
        if self.freeze_heap:
            _freeze_heap()
        try:
            yield
        finally:
            await self.batches.stop()
            if self._unobserve is not None:
                self._unobserve()
            await self.pipe.aclose()

    # -- small routes ---------------------------------------------------------------------
    async def health(self, request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(dumps({"status": "ok", "pipeline": self.pipe.name}), media_type=_JSON)

    async def list_models(self, request: HTTPRequest) -> HTTPResponse:
        try:
            self.keys.tenant_for(request.headers.get("authorization"))
        except HTTPProblem as problem:
            return _problem_response(problem, {})
        await self.models.refresh()
        return HTTPResponse(dumps(self.models.listing()), media_type=_JSON)

    async def metrics_text(self, request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(self.metrics.render(), media_type=CONTENT_TYPE)

    # -- generation -----------------------------------------------------------------------
    async def chat(self, request: HTTPRequest) -> Any:
        return await self._generate(request, "chat")

    async def completions(self, request: HTTPRequest) -> Any:
        return await self._generate(request, "completion")

    async def _generate(self, request: HTTPRequest, kind: str) -> Any:
        route = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        span, trace_id = server_span(f"POST {route}", request.headers, route, self._tracer)
        rid = uuid.uuid4().hex[:16]
        ex = Exchange(self, route, span, trace_id, rid)
        watch = DisconnectWatch(request.receive)
        streaming = False
        try:
            with activated(span):
                tenant = self.keys.tenant_for(request.headers.get("authorization"))
                body = await read_json(request, self._max_body, self.settings.body_timeout)
                call = parse_call(body, kind=kind, tenant=tenant, request_id=rid)
                target = self.models.resolve(call.model)
                ex.model = target.model
                if target.kind == "graph" and kind != "chat":
                    raise HTTPProblem(
                        400,
                        f"the graph model {target.model!r} answers chat requests only",
                        param="model",
                    )
                if target.kind == "graph" and call.request.params.n > 1:
                    raise HTTPProblem(
                        400,
                        f"the graph model {target.model!r} answers with one choice: a run "
                        "is several steps, and n runs are n requests; send n separately or "
                        "name a backend model",
                        param="n",
                    )
                if call.request.stream:
                    answer = await self._open_stream(call, target, ex, watch)
                    streaming = True  # the stream's response closes the watch
                    return answer
                response = await watch.run(self._answer(call, target))
                payload = (chat_json if kind == "chat" else completion_json)(
                    call, response, target.model
                )
                ex.ok(response)
                return HTTPResponse(payload, media_type=_JSON, headers=ex.headers)
        except ClientLeft:
            ex.left()
            return HTTPResponse(b"", status_code=499)
        except Exception as exc:
            return _problem_response(ex.failed(exc), ex.headers)
        finally:
            if not streaming:
                watch.close()

    @staticmethod
    def _graph_run(call: Call) -> dict[str, Any]:
        """What the graph route runs with: the whole chat (system messages, history, the
        last user turn) as the input, the call's sampling parameters (they override the
        answer steps' own, field by field: ``Pipeline.answer_steps``), and the time left
        before the call's deadline as the run's timeout."""
        request = call.request
        kwargs: dict[str, Any] = {
            "input": request.messages,
            "user": request.user,
            "tenant": request.tenant,
            "priority": request.priority,
            "params": request.params,
        }
        left = request.remaining()
        if left is not None:
            if left <= 0:
                raise RejectedError(
                    "the request's deadline passed before the graph started", reason="deadline"
                )
            kwargs["timeout"] = left
        return kwargs

    async def _answer(self, call: Call, target: Target) -> Response:
        if target.kind == "graph":
            result = await self.pipe.ainvoke(**self._graph_run(call))
            return graph_response(result, target.model)
        response = await self.pipe.acall(call.request, backend=target.pin)
        return await response.complete()

    async def _open_stream(
        self, call: Call, target: Target, ex: Exchange, watch: DisconnectWatch
    ) -> EventStreamResponse:
        # The role chunk (one per choice, as the engine sends them) goes out with the
        # first token, in one write: a write less before the first token.
        roles = (
            b"".join(
                chat_chunk(call, target.model, role=True, choice=i)
                for i in range(call.request.params.n)
            )
            if call.request.kind == "chat"
            else b""
        )
        if target.kind == "graph":
            # the run's arguments are checked here, so a spent deadline is an HTTP error
            events = after(roles, graph_events(self.pipe, call, target, ex, self._graph_run(call)))
        else:
            # Opening the stream may wait (queueing middleware, a slow prefill before the
            # server's headers): a client that leaves meanwhile cancels it too.
            response = await watch.run(self.pipe.acall(call.request, backend=target.pin))
            events = backend_events(call, target, response, ex, roles)
        return EventStreamResponse(
            events,
            headers=list(ex.headers.items()),
            on_disconnect=ex.left,
            on_error=ex.failed,
            scope=partial(activated, ex.span),  # the request span, current again
            watch=watch,
        )


def _freeze_heap() -> None:
    """Move every object alive after start-up (modules, the pipeline, its stores) out of
    the collector's reach (``gc.freeze``). Why: a full collection walks every tracked
    object, ~120k after the imports alone (~90 ms on the development machine), and what
    start-up built lives as long as the process; afterwards a collection walks only what
    requests made. Measured in docs/gateway.md (fifth pass)."""
    gc.collect()
    gc.freeze()


def _problem_response(problem: HTTPProblem, headers: dict[str, str]) -> HTTPResponse:
    return HTTPResponse(
        dumps(problem.body()),
        status_code=problem.status,
        media_type=_JSON,
        headers={**headers, **problem.headers},
    )


class GatewayApp(Starlette):
    """Starlette with a short way in for the generation routes, and a cap on the work.

    ``POST /v1/chat/completions`` and ``POST /v1/completions`` go straight to their
    handlers (which turn every failure into an OpenAI-shaped error themselves); everything
    else, lifespan included, takes Starlette's usual path, where unknown routes, wrong
    methods and any unexpected error get OpenAI-shaped 404/405/500 answers too
    (:func:`_http_error`). A POST to a ``/v1/`` route past ``gateway.max_in_flight``
    requests being answered is refused with 503 ``overloaded`` and ``Retry-After`` at once,
    before its body is read.
    """

    def __init__(self, gw: Gateway, routes: list[Route], **kw: Any) -> None:
        super().__init__(routes=routes, **kw)
        self._direct = {"/v1/chat/completions": gw.chat, "/v1/completions": gw.completions}
        self._cap = gw.settings.max_in_flight
        self._busy = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            if self._busy >= self._cap and scope["path"].startswith("/v1/"):
                await _problem_response(_overloaded(self._cap), {})(scope, receive, send)
                return
            self._busy += 1
            try:
                handler = self._direct.get(scope["path"])
                if handler is not None:
                    scope["app"] = self
                    response = await handler(HTTPRequest(scope, receive))
                    await response(scope, receive, send)
                    return
                await super().__call__(scope, receive, send)
            finally:
                self._busy -= 1
            return
        await super().__call__(scope, receive, send)


def _overloaded(cap: int) -> HTTPProblem:
    return HTTPProblem(
        503,
        f"the gateway is answering its maximum of {cap} requests; retry shortly",
        type="service_unavailable",
        code="overloaded",
        headers={"Retry-After": "1"},
    )


async def _http_error(request: HTTPRequest, exc: Exception) -> HTTPResponse:
    """Starlette's own errors (unknown route, wrong method, an unexpected exception) in
    OpenAI's error shape, never a text page or a traceback."""
    if isinstance(exc, StarletteHTTPException) and exc.status_code in (404, 405):
        if exc.status_code == 404:
            problem = HTTPProblem(404, f"no route {clip(request.url.path, 100)}", code="not_found")
        else:
            problem = HTTPProblem(
                405,
                f"{clip(request.method, 20)} is not allowed on {clip(request.url.path, 100)}",
                code="method_not_allowed",
                headers=dict(exc.headers or {}),
            )
        return _problem_response(problem, {})
    _log.error("unexpected error on %s: %s", request.url.path[:100], type(exc).__name__)
    return _problem_response(problem_from(exc), {})


def create_app(pipe: Pipeline, settings: GatewaySpec | None = None) -> Starlette:
    """The gateway's ASGI app for ``pipe`` (settings default to the spec's ``gateway:``).

    The app owns the pipeline's lifecycle: it starts it on ASGI start-up and closes it on
    shutdown. ``app.state.gateway`` is the :class:`Gateway` (tests read its metrics).
    """
    install_redaction()  # no secret from a query string reaches the access log
    gw = Gateway(pipe, settings)
    app = GatewayApp(
        gw,
        routes=[
            Route("/v1/chat/completions", gw.chat, methods=["POST"]),
            Route("/v1/completions", gw.completions, methods=["POST"]),
            Route("/v1/embeddings", gw.embeddings.handle, methods=["POST"]),
            Route("/v1/models", gw.list_models, methods=["GET"]),
            Route("/health", gw.health, methods=["GET"]),
            Route("/metrics", gw.metrics_text, methods=["GET"]),
            *gw.batches.routes(),
        ],
        lifespan=gw.lifespan,
        exception_handlers={404: _http_error, 405: _http_error, Exception: _http_error},
    )
    app.state.gateway = gw
    return app
