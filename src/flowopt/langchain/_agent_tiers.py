"""The backends of FlowoptMiddleware's stack: LangChain's own model call, one per tier.

Why backends, and not a terminal of its own: flowopt's stack ends in the steering terminal
(:mod:`flowopt.middleware.steer`), which dispatches on ``Request.route``, refuses avoided
endpoints without a call and makes the ``chat {model}`` span. Giving it one backend per
tier keeps all of that: the ``default`` tier is the agent's own model, each other tier a
chat model the user passed (``models={"strong": ...}``). A tier answers by calling the
agent's ``handler`` with ``request.override(model=tier_model)``, so LangChain still binds
the tools, applies structured output and runs its callbacks.

The handler belongs to one agent model call, so the call travels in a context variable
(:data:`CURRENT`), set by the middleware for the duration of its stack run: context
variables follow the stack's awaits, and the tasks and threads it starts copy them.

Side calls (``Request.purpose``: triage's judge, cascade's verifier) ask the tier's model
directly with their own messages: they are not the agent's turn, so no agent tools or
structured output are bound to them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from langchain.agents.middleware.types import ModelRequest, ModelResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from flowopt.backends.base import ModelInfo
from flowopt.errors import ConfigError
from flowopt.langchain._agent_translate import (
    backend_error,
    lc_messages,
    model_identity,
    model_name,
    model_provider,
    overrides,
    to_response,
)
from flowopt.types import Request, Response

__all__ = ["CURRENT", "AgentCall", "ModelTier"]

Handler = Callable[[ModelRequest[Any]], Any]


@dataclass
class AgentCall:
    """One agent model call: LangChain's request and handler, the flowopt request made
    of it (``base``), and the handler's results by key (a response names its result in
    ``metadata``; one call may make several: retries, cascade tiers)."""

    request: ModelRequest[Any]
    handler: Handler
    is_async: bool
    base: Request
    results: dict[str, Any] = field(default_factory=dict)

    def keep(self, result: Any) -> str:
        key = f"r{len(self.results)}"
        self.results[key] = result
        return key


CURRENT: ContextVar[AgentCall | None] = ContextVar("flowopt_agent_call", default=None)


class ModelTier:
    """A flowopt backend that answers through LangChain: the agent's handler with this
    tier's model (``model=None``: the agent's own)."""

    def __init__(self, name: str, model: BaseChatModel | None) -> None:
        self.name = name
        self.model = model
        self.endpoint = f"langchain:{name}"

    @property
    def provider(self) -> str:
        return model_provider(self.model) if self.model is not None else "langchain"

    async def model_info(self) -> ModelInfo:
        root = model_identity(self.model) if self.model is not None else "agent-model"
        return ModelInfo(id=f"langchain:{self.name}", root=root)

    def endpoint_for_display(self) -> str:
        return self.endpoint

    async def aclose(self) -> None:
        """Nothing to release: the models' clients belong to the application."""

    async def generate(self, request: Request) -> Response:
        call = CURRENT.get()
        if call is None:
            raise ConfigError(
                f"tier {self.name!r} was called outside an agent model call",
                hint="FlowoptMiddleware's stack runs only inside create_agent's model node",
            )
        model = self.model or call.request.model
        started = time.perf_counter()
        try:
            if request.purpose is not None:
                result: Any = await self._side_call(call, model, request)
            else:
                result = await self._agent_turn(call, request)
        except Exception as exc:
            err = backend_error(exc, self.endpoint)
            if err is exc:
                raise
            raise err from exc
        return to_response(
            result,
            fallback_model=model_name(model),
            backend=self.name,
            endpoint=self.endpoint,
            started=started,
            key=call.keep(result),
        )

    async def _agent_turn(self, call: AgentCall, request: Request) -> ModelResponse[Any]:
        changes = overrides(call.request, call.base, request)
        if self.model is not None:
            changes["model"] = self.model
        lc = call.request.override(**changes) if changes else call.request
        if call.is_async:
            handler: Callable[[ModelRequest[Any]], Awaitable[Any]] = call.handler
            result = await handler(lc)
        else:
            # The sync handler blocks: run it in a worker thread (which copies this
            # context, so LangChain's callbacks and the current span stay attached).
            result = await asyncio.to_thread(call.handler, lc)
        return result  # type: ignore[no-any-return]

    async def _side_call(
        self, call: AgentCall, model: BaseChatModel, request: Request
    ) -> BaseMessage:
        messages = lc_messages(request.messages)
        settings = overrides(call.request, call.base, request).get("model_settings", {})
        if call.is_async:
            return await model.ainvoke(messages, **settings)
        return await asyncio.to_thread(model.invoke, messages, **settings)
