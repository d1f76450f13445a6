"""``ChatFlowopt``: a LangChain chat model that runs a flowopt middleware stack in-process.

Why a real :class:`~flowopt.pipeline.Pipeline` underneath: the backend and middleware
arguments take exactly the forms a pipeline spec takes, so they are parsed, validated and
built by the same code (a bad name or option is a ``ConfigError`` at construction, not at
the first call), and every call goes through ``Pipeline.acall``: the same stack, steering
terminal, tracing and typed errors as a pipeline hop. The sync methods run the async core
on flowopt's one background loop (:mod:`flowopt._runner`), as ``Pipeline.invoke`` does, so
connection pools survive across calls.

LangChain's own cache and flowopt's ``cache`` middleware must not both store answers (two
stores, two invalidation stories, and LangChain's would replay tool calls flowopt's never
stores). With flowopt's cache in the stack, ``cache`` defaults to ``False`` (a global
``set_llm_cache`` is skipped, with a warning), and an explicit LangChain cache is a
``ConfigError``. Without it, LangChain's cache works as for any chat model.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.caches import BaseCache
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from flowopt import _runner
from flowopt.errors import ConfigError
from flowopt.langchain._chat_request import (
    build_pipeline,
    build_request,
    describe_stack,
    format_tools,
    has_flowopt_cache,
    normalise_tool_choice,
    release_pipeline,
    response_format_for,
    whole_chunk,
)
from flowopt.langchain._convert import response_metadata, to_ai_chunk, to_ai_message, usage_metadata
from flowopt.pipeline import Pipeline
from flowopt.types import Params, Request

__all__ = ["ChatFlowopt"]

StructuredMethod = Literal["function_calling", "json_mode", "json_schema"]


class ChatFlowopt(BaseChatModel):
    """A LangChain chat model whose calls run through a flowopt middleware stack.

    ``backend``/``backends``/``middleware`` take the forms of a pipeline spec::

        ChatFlowopt(
            backend={"vllm": {"base_url": "http://127.0.0.1:8000", "model": "qwen0.5b"}},
            middleware=["cache", {"resilience": {"retry": 3}}],
            temperature=0,
            max_tokens=256,
        )

    or wrap a pipeline you already built: ``ChatFlowopt.from_pipeline(pipe)``.
    ``response_metadata["flowopt"]`` carries what the stack decided (``cached``, the
    backend, every middleware decision). Per call, ``invoke(..., backend="strong")`` pins
    the call to a named backend, ``tenant=``/``user=`` set the identity caches and limits
    partition by, and ``request_metadata=`` reaches the middleware (``{"cache": False}``
    bypasses flowopt's cache once).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    backend: Any = None
    """The default backend, as a spec gives it: ``{"vllm": {"base_url", "model", ...}}``,
    a registered name, a ``Use`` or a backend object."""
    backends: dict[str, Any] = Field(default_factory=dict)
    """Extra named backends (tiers) for triage, cascade, fallback or ``backend=`` pins."""
    middleware: list[Any] = Field(default_factory=list)
    """Outermost first: names, ``{name: {options}}``, ``Use`` records or objects."""
    pipeline: Pipeline | None = Field(default=None, exclude=True)
    """A pipeline to run over instead of building one (see :meth:`from_pipeline`)."""
    route: str | None = None
    """A backend name every call is pinned to (no layer may move it); None: layers choose."""
    model: str | None = None
    """The model name sent to the server; None: each backend's own."""
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Sent to the server as given (vLLM's ``top_k``, ``repetition_penalty``...)."""
    timeout: float | None = None
    """Seconds per call: the request's deadline, which every layer and retry respects."""
    max_retries: int | None = None
    """Adds a ``retry`` layer (``max_retries + 1`` attempts) innermost; a ConfigError when
    the stack already has ``retry`` or ``resilience`` (set the attempts there)."""
    api_key: SecretStr | None = None
    """Sent by every ``vllm`` backend that sets no ``api_key`` of its own."""
    tenant: str | None = None
    user: str | None = None
    request_metadata: dict[str, Any] = Field(default_factory=dict)
    tracing: dict[str, Any] | None = None
    """The built pipeline's ``tracing`` block (a spec's ``tracing:``)."""
    streaming: bool = False
    """Stream by default (``invoke`` then streams and reports tokens to callbacks)."""
    strict_tools: bool | None = None
    """``bind_tools``' default ``strict``. True: every tool's schema is sent strict
    (``additionalProperties: false``, all properties required), and vLLM's guided decoding
    of a forced call holds the arguments to it exactly; small models otherwise copy the
    schema into the arguments of a tool that takes none."""

    _pipe: Pipeline = PrivateAttr()
    _owned: bool = PrivateAttr(default=False)
    _flowopt_cache: bool = PrivateAttr(default=False)
    _warned_global_cache: bool = PrivateAttr(default=False)
    _stack: dict[str, Any] = PrivateAttr(default_factory=dict)
    _params: dict[str, Any] = PrivateAttr(default_factory=dict)

    # -- construction -----------------------------------------------------------------------
    @model_validator(mode="after")
    def _build(self) -> ChatFlowopt:
        if self.pipeline is not None:
            if self.backend is not None or self.backends or self.middleware:
                raise ConfigError(
                    "ChatFlowopt got both a pipeline and backend/backends/middleware",
                    hint="give the stack in one place: ChatFlowopt.from_pipeline(pipe), or "
                    "ChatFlowopt(backend=..., middleware=[...])",
                )
            if self.max_retries or self.api_key is not None or self.tracing is not None:
                raise ConfigError(
                    "max_retries, api_key and tracing configure a stack ChatFlowopt builds; "
                    "this one comes built",
                    hint="set them in the pipeline's spec (a retry layer, the backend's "
                    "api_key, its tracing block)",
                )
            self._pipe, self._owned = self.pipeline, False
        else:
            key = self.api_key.get_secret_value() if self.api_key is not None else None
            self._pipe = build_pipeline(
                self.backend,
                self.backends,
                self.middleware,
                max_retries=self.max_retries,
                api_key=key,
                tracing=self.tracing,
            )
            self._owned = True
            # LangChain apps rarely close a chat model: release its connections when it goes.
            weakref.finalize(self, release_pipeline, self._pipe)
        if self.route is not None and self.route not in self._pipe.backends:
            raise ConfigError(
                f"route {self.route!r} is not a backend of this stack "
                f"(it has {sorted(self._pipe.backends)})",
                hint="declare it under backends={name: ...}",
            )
        self._flowopt_cache = has_flowopt_cache(self._pipe)
        if self._flowopt_cache:
            if self.cache is True or isinstance(self.cache, BaseCache):
                raise ConfigError(
                    "a LangChain cache was given and the stack has flowopt's cache "
                    "middleware: every answer would be cached twice",
                    hint="keep one: drop cache= (flowopt's cache keys on tools, tenant and "
                    "model, and never stores tool calls), or drop 'cache' from middleware",
                )
            # The field's own default (None) would pick up a global set_llm_cache.
            object.__setattr__(self, "cache", False)
        self._params = self._base_params()
        Params.parse(self._params)  # a bad temperature or max_tokens fails here, not per call
        self._stack = describe_stack(self._pipe)
        return self

    @classmethod
    def from_pipeline(
        cls, pipe: Pipeline, backend: str | None = None, **kwargs: Any
    ) -> ChatFlowopt:
        """A chat model over ``pipe``'s stack (its steps are not run). ``backend`` pins
        every call to that named backend; the spec's ``defaults`` are the sampling
        parameters unless ``kwargs`` set them. The pipeline stays the caller's to close."""
        return cls(pipeline=pipe, route=backend, **kwargs)

    def _base_params(self) -> dict[str, Any]:
        """Sampling fields of every call: the wrapped spec's ``defaults`` under this
        model's own fields (``None`` leaves the server default)."""
        own = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop,
        }
        defaults = {} if self._owned else dict(self._pipe.spec.defaults)
        return {**defaults, **{k: v for k, v in own.items() if v is not None}}

    async def aclose(self) -> None:
        """Close the stack's backends and middleware, when this model built them (a
        pipeline given to :meth:`from_pipeline` stays open: it is the caller's)."""
        if self._owned:
            await self._pipe.aclose()

    def close(self) -> None:
        """Sync :meth:`aclose`."""
        _runner.run(self.aclose())

    # -- what LangChain reads ------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "flowopt"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """The stack (secrets redacted) and the sampling fields: LangChain traces these and
        keys its own cache on them."""
        return {
            **self._stack,
            "model": self.model,
            "route": self.route,
            **self._params,
            "model_kwargs": self.model_kwargs,
        }

    @property
    def flowopt_pipeline(self) -> Pipeline:
        """The pipeline whose stack every call runs through."""
        return self._pipe

    def _model_name(self, route: str | None = None) -> str:
        backend = self._pipe.backends.get(route or self.route or "default")
        name = self.model or getattr(backend, "model", None)
        return str(name) if name else "flowopt"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="flowopt",
            ls_model_name=str(kwargs.get("model") or self._model_name(kwargs.get("backend"))),
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self._params.get("temperature"))
        if isinstance(temperature, int | float):
            params["ls_temperature"] = float(temperature)
        max_tokens = kwargs.get("max_tokens", self._params.get("max_tokens"))
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        stops = stop if stop is not None else self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    # -- the calls -------------------------------------------------------------------------------
    def _warn_skipped_cache(self) -> None:
        if (
            self._flowopt_cache
            and not self._warned_global_cache
            and "cache" not in self.model_fields_set
            and get_llm_cache() is not None
        ):
            self._warned_global_cache = True
            warnings.warn(
                "a global LangChain cache is set (set_llm_cache), but this ChatFlowopt skips "
                "it: its stack has flowopt's cache middleware, which caches instead. Pass "
                "cache=False to say so and silence this warning.",
                UserWarning,
                stacklevel=5,
            )

    def _request(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        *,
        stream: bool,
    ) -> tuple[Request, str | None]:
        self._warn_skipped_cache()
        return build_request(
            messages,
            base=self._params,
            stop=stop,
            call=kwargs,
            model_kwargs=self.model_kwargs,
            identity={
                "model": self.model,
                "tenant": self.tenant,
                "user": self.user,
                "route": self.route,
                "request_metadata": self.request_metadata,
            },
            timeout=self.timeout,
            stream=stream,
        )

    async def _acall(self, request: Request, route: str | None) -> ChatResult:
        response = await (await self._pipe.acall(request, backend=route)).complete()
        message = to_ai_message(response)
        return ChatResult(
            generations=[
                ChatGeneration(
                    message=message, generation_info={"finish_reason": response.finish_reason}
                )
            ],
            llm_output={"model_name": response.model},
        )

    async def _achunks(self, request: Request, route: str | None) -> AsyncIterator[AIMessageChunk]:
        """The answer as chunks; the last one (``chunk_position="last"``) carries the usage,
        finish reason and flowopt's decisions, so a summed message has each exactly once."""
        response = await self._pipe.acall(request, backend=route)
        stream = response.stream
        if stream is None:  # a layer answered whole: one chunk with all of it
            final = response
            yield whole_chunk(response)
        else:
            async with stream as chunks:
                async for chunk in chunks:
                    piece = to_ai_chunk(chunk)
                    piece.response_metadata = {}  # the finish reason travels on the last chunk
                    yield piece
            final = stream.response if stream.response is not None else await stream.collect()
        yield AIMessageChunk(
            content="",
            usage_metadata=usage_metadata(final.usage),
            response_metadata=response_metadata(final),
            chunk_position="last",
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request, route = self._request(messages, stop, kwargs, stream=False)
        return _runner.run(self._acall(request, route))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request, route = self._request(messages, stop, kwargs, stream=False)
        return await self._acall(request, route)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request, route = self._request(messages, stop, kwargs, stream=True)
        # Each chunk is fetched on flowopt's loop and handed back here, so callbacks run in
        # the caller's thread and context, as LangChain expects of a sync stream.
        for piece in _runner.iterate(self._achunks(request, route)):
            out = ChatGenerationChunk(message=piece)
            if run_manager is not None:
                run_manager.on_llm_new_token(_text(piece), chunk=out)
            yield out

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        request, route = self._request(messages, stop, kwargs, stream=True)
        async for piece in self._achunks(request, route):
            out = ChatGenerationChunk(message=piece)
            if run_manager is not None:
                await run_manager.on_llm_new_token(_text(piece), chunk=out)
            yield out

    # -- tools and structured output -------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (anything ``convert_to_openai_tool`` takes). ``tool_choice``:
        ``"auto"``, ``"none"``, ``"any"``/``"required"``/``True`` (some tool must be
        called), a tool's name (that tool), or OpenAI's dict. They reach the server as
        ``Request.tools``/``tool_choice``/``parallel_tool_calls``, which flowopt's cache
        keys on."""
        formatted = format_tools(tools, strict=self.strict_tools if strict is None else strict)
        choice = normalise_tool_choice(tool_choice, formatted)
        if choice is not None:
            kwargs["tool_choice"] = choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: StructuredMethod = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answers parsed into ``schema``.

        ``json_schema`` (default): vLLM's structured outputs constrain the answer to the
        schema, and the answer is text, so flowopt's cache can store it.
        ``function_calling``: one forced tool call (never cached: flowopt's cache stores no
        tool calls). ``json_mode``: any JSON object (say so in the prompt).
        """
        if kwargs:
            raise ValueError(f"Received unsupported arguments {kwargs}")
        if method == "json_mode" and strict is not None:
            raise ValueError("strict does not apply to method='json_mode'")
        if schema is None and method != "json_mode":
            raise ValueError(f"method={method!r} needs a schema")
        pydantic_schema = isinstance(schema, type) and is_basemodel_subclass(schema)
        trace = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        llm: Runnable[LanguageModelInput, Any]
        parser: Runnable[Any, Any]
        if method == "function_calling":
            assert schema is not None
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools(
                [schema],
                tool_choice=name,
                strict=strict,
                parallel_tool_calls=False,
                ls_structured_output_format=trace,
            )
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if pydantic_schema
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method in ("json_schema", "json_mode"):
            fmt = (
                {"type": "json_object"}
                if method == "json_mode"
                else response_format_for(schema, strict=strict)
            )
            bound: dict[str, Any] = {"response_format": fmt}
            if schema is not None:
                bound["ls_structured_output_format"] = trace
            llm = self.bind(**bound)
            parser = (
                PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
                if pydantic_schema
                else JsonOutputParser()
            )
        else:
            raise ValueError(
                f"method must be 'json_schema', 'function_calling' or 'json_mode', got {method!r}"
            )
        if not include_raw:
            return llm | parser
        with_parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        ).with_fallbacks(
            [RunnablePassthrough.assign(parsed=lambda _: None)], exception_key="parsing_error"
        )
        return RunnableMap(raw=llm) | with_parsed


def _text(piece: AIMessageChunk) -> str:
    return piece.content if isinstance(piece.content, str) else ""
