"""``FlowoptMiddleware``: flowopt's layers around a LangChain agent's model calls.

::

    agent = create_agent(
        ChatOpenAI(model=..., temperature=0, max_retries=0),
        tools=[calculator, faq],
        middleware=[FlowoptMiddleware(["cache", {"resilience": {"retry": 3}}])],
    )

Why a ``wrap_model_call`` middleware and not a model: the user keeps their model, and
LangChain keeps doing the call. Each model call of the agent runs through a flowopt
middleware stack configured like a pipeline's (``cache``, ``triage``, ``cascade``,
``resilience``, plugins), whose backends call LangChain's ``handler``: the ``default``
tier with the request as it is, every other tier (``models={"strong": ...}``) with
``request.override(model=...)``. Tool binding, structured output and callbacks therefore
work on every tier exactly as without flowopt (see :mod:`flowopt.langchain._agent_tiers`).

What comes back to LangChain: on a call the handler answered, the handler's own
``ModelResponse`` with flowopt's decisions added to the AI message's
``response_metadata["flowopt"]``; on a cache hit (or a stale answer) an ``AIMessage``
flowopt built, with no model call. LangChain's streaming comes from the model's callbacks,
so a hit in a streamed agent arrives as *one* whole message in ``stream_mode="messages"``
(LangGraph emits a node's messages that were not streamed when the node ends) and no
``on_chat_model_stream`` events: there is no model run to replay chunks through.

Resilience here: a model call has no side effects (tools run in the agent's tool node,
outside ``wrap_model_call``), so retrying or falling back *within* one model call never
repeats a tool. Retries apply to transport failures the model's client raises (HTTP
429/5xx, timeouts, connection errors: see ``backend_error``); turn the client's own
retries off (``ChatOpenAI(max_retries=0)``) so the two do not multiply. When every try
fails, the caller gets the model's own exception back, with flowopt's notes on it.

Sync and async: ``awrap_model_call`` runs the stack in the caller's task;
``wrap_model_call`` runs it on flowopt's background loop (:mod:`flowopt._runner`) with the
caller's context copied, and the sync handler in a worker thread of that context.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ModelRequest,
    ModelResponse,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from flowopt import _runner, registry
from flowopt.errors import ConfigError, FlowoptError, InvalidRequestError
from flowopt.langchain._agent_tiers import CURRENT, AgentCall, ModelTier
from flowopt.langchain._agent_translate import (
    RESULT_KEY,
    annotate,
    original_error,
    replayed,
    to_request,
)
from flowopt.middleware.base import CallNext, Middleware, PipelineContext, Use, build_stack
from flowopt.middleware.steer import steered_backend
from flowopt.tracing import GenAI, PipelineTracing, record_error

__all__ = ["FlowoptMiddleware"]

_log = logging.getLogger("flowopt.langchain")

Identity = str | Callable[[ModelRequest[Any]], str | None] | None
ToolResult = ToolMessage | Command[Any]


class FlowoptMiddleware(AgentMiddleware[AgentState[Any], Any, Any]):
    """flowopt's middleware stack around every model call of a ``create_agent`` agent.

    ``middleware``: the stack, outermost first, written as in a spec (``"cache"``,
    ``{"cache": {"store": "memory"}}``, ``{"resilience": {...}}``, a ``Use`` or an
    object). ``models``: extra tiers by name for triage, cascade and fallback; the
    ``default`` tier is always the agent's own model. ``tenant`` / ``user``: the identity
    caches and limits partition by, as a string or a function of the ``ModelRequest``.
    ``tracing``: flowopt's span settings (default: the global provider, the process's
    content-capture default). ``name``: the middleware's name in the agent (unique per
    agent). ``tool_spans``: an ``execute_tool {name}`` span around each tool call.
    """

    def __init__(
        self,
        middleware: Sequence[Any] = (),
        *,
        models: Mapping[str, BaseChatModel] | None = None,
        tenant: Identity = None,
        user: Identity = None,
        tracing: PipelineTracing | None = None,
        name: str = "FlowoptMiddleware",
        tool_spans: bool = True,
    ) -> None:
        super().__init__()
        self.tools = []
        self._name = name
        self._tenant = tenant
        self._user = user
        self._tool_spans = tool_spans
        if models and "default" in models:
            raise ConfigError(
                "models: 'default' is the agent's own model and cannot be replaced",
                hint="name the other tiers differently, e.g. models={'strong': ...}",
            )
        self.tiers: dict[str, ModelTier] = {"default": ModelTier("default", None)}
        for tier, model in (models or {}).items():
            self.tiers[tier] = ModelTier(tier, model)
        self.middleware: list[tuple[str, Middleware]] = []
        for i, item in enumerate(middleware):
            use = Use.parse(item, where=f"middleware[{i}]")
            obj = registry.instantiate(use, "middleware", f"middleware[{i}] ({use.name})")
            self.middleware.append((str(getattr(obj, "name", None) or use.name), obj))
        self.tracing = tracing or PipelineTracing.default()
        self._stack: CallNext = build_stack(
            self.middleware,
            steered_backend(self.tiers, default="default", tracing=self.tracing),
            tracing=self.tracing,
        )
        self._started = False
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def name(self) -> str:
        return self._name

    def layer(self, name: str) -> Any:
        """The stack's middleware called ``name`` (e.g. ``"cache"``), or None."""
        return next((mw for n, mw in self.middleware if n == name), None)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Run each layer's ``setup`` once (the first model call does it)."""
        if self._started:
            return
        lock = self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            if self._started:
                return
            ctx = PipelineContext(
                name=self._name,
                backend=self.tiers["default"],
                backends=dict(self.tiers),
                steered=True,
                tracing=self.tracing,
            )
            for _, mw in self.middleware:
                setup = getattr(mw, "setup", None)
                if setup is not None:
                    await setup(ctx)
            self._started = True

    async def aclose(self) -> None:
        """Close the layers' stores (the models belong to the application)."""
        for _, mw in self.middleware:
            close = getattr(mw, "aclose", None)
            if close is not None:
                await close()
        self._started = False

    def close(self) -> None:
        _runner.run(self.aclose())

    # -- model calls ----------------------------------------------------------------------
    def _identity(self, value: Identity, request: ModelRequest[Any]) -> str | None:
        return value(request) if callable(value) else value

    def _call(self, request: ModelRequest[Any], handler: Any, is_async: bool) -> AgentCall | None:
        try:
            base = to_request(
                request,
                tenant=self._identity(self._tenant, request),
                user=self._identity(self._user, request),
            )
        except InvalidRequestError as exc:
            # The model may well accept what flowopt cannot read: let it, and say so.
            _log.warning("FlowoptMiddleware passes a model call through unchanged: %s", exc)
            return None
        return AgentCall(request, handler, is_async, base)

    async def _run(self, call: AgentCall) -> ModelResponse[Any]:
        await self.start()
        token = CURRENT.set(call)
        try:
            response = await (await self._stack(call.base)).complete()
        except FlowoptError as exc:
            raise original_error(exc) from None
        finally:
            CURRENT.reset(token)
        result = call.results.get(str(response.metadata.get(RESULT_KEY)))
        if isinstance(result, ModelResponse):
            return annotate(result, response)
        if result is not None:  # an inner middleware returned a bare AIMessage
            return annotate(ModelResponse(result=[result]), response)
        return replayed(response, call.request)

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        call = self._call(request, handler, is_async=False)
        if call is None:
            return handler(request)
        return _runner.run(self._run(call))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any]:
        call = self._call(request, handler, is_async=True)
        if call is None:
            return await handler(request)
        return await self._run(call)

    # -- tool calls: spans only -----------------------------------------------------------
    def _tool_span(self, request: ToolCallRequest) -> Span:
        tc = request.tool_call
        span = self.tracing.tracer.start_span(f"execute_tool {tc['name']}")
        if span.is_recording():
            span.set_attributes(
                {
                    GenAI.OPERATION: "execute_tool",
                    GenAI.TOOL_NAME: tc["name"],
                    GenAI.TOOL_CALL_ID: tc.get("id") or "",
                    GenAI.TOOL_TYPE: "function",
                }
            )
            if request.tool is not None and request.tool.description:
                span.set_attribute("gen_ai.tool.description", request.tool.description)
            if self.tracing.capture_content:
                span.set_attribute("gen_ai.tool.call.arguments", _json(tc.get("args")))
        return span

    def _tool_done(self, span: Span, result: ToolResult) -> None:
        if isinstance(result, ToolMessage) and span.is_recording():
            if result.status == "error":
                span.set_attribute(GenAI.ERROR_TYPE, "tool_error")
                span.set_status(Status(StatusCode.ERROR, str(result.content)[:500]))
            if self.tracing.capture_content:
                span.set_attribute("gen_ai.tool.call.result", _json(result.content))
        span.end()

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], ToolResult]
    ) -> ToolResult:
        """The tool runs as LangChain runs it; flowopt only adds its span (flowopt's
        layers never wrap tools: a tool may have side effects, so nothing here retries
        or caches it)."""
        if not self._tool_spans:
            return handler(request)
        span = self._tool_span(request)
        try:
            with trace.use_span(span, end_on_exit=False):
                result = handler(request)
        except BaseException as exc:
            record_error(span, exc)
            span.end()
            raise
        self._tool_done(span, result)
        return result

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolResult]],
    ) -> ToolResult:
        if not self._tool_spans:
            return await handler(request)
        span = self._tool_span(request)
        try:
            with trace.use_span(span, end_on_exit=False):
                result = await handler(request)
        except BaseException as exc:
            record_error(span, exc)
            span.end()
            raise
        self._tool_done(span, result)
        return result


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
