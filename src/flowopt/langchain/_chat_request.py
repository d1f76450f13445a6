"""The pieces of :class:`~flowopt.langchain.ChatFlowopt` that are plain functions: build the
pipeline from its spec parts, turn one LangChain call (messages, ``stop``, bound kwargs)
into a flowopt :class:`~flowopt.types.Request`, normalise tools and ``tool_choice``, and
describe the stack without its secrets, and release a collected model's connections.

Apart from the model class so each piece can be read (and tested) alone, and so the class
holds only what LangChain calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.utils.function_calling import convert_to_openai_tool

from flowopt import _runner
from flowopt.declare import pipeline
from flowopt.errors import ConfigError, InvalidRequestError
from flowopt.langchain._convert import to_flowopt_messages
from flowopt.middleware.base import Use
from flowopt.pipeline import Pipeline
from flowopt.types import Params, Request, Response

__all__ = [
    "CALL_KEYS",
    "build_pipeline",
    "describe_stack",
    "format_tools",
    "has_flowopt_cache",
    "middleware_name",
    "normalise_tool_choice",
    "release_pipeline",
    "response_format_for",
    "whole_chunk",
]

PIPELINE_NAME = "chatflowopt"
# The one step of the pipeline ChatFlowopt builds: never run (calls go through
# ``Pipeline.acall``), but a spec needs a step, and this keeps the spec a valid YAML one.
_STEP = {"name": "chat", "prompt": "{input}"}
_SAMPLING = ("temperature", "top_p", "max_tokens", "seed", "logprobs", "top_logprobs")
# Keys a LangChain call may carry that are not sampling parameters or server extras.
CALL_KEYS = frozenset(
    {
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "model",
        "backend",
        "tenant",
        "user",
        "request_metadata",
        "timeout",
        "stream",
        "ls_structured_output_format",
        "structured_output_format",
        *_SAMPLING,
    }
)
_SECRET_KEYS = ("api_key", "apikey", "token", "secret", "password", "authorization")
_RETRY_LAYERS = frozenset({"retry", "resilience"})


def middleware_name(entry: Any) -> str:
    """The registered name of one middleware entry in any form a spec takes."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Use):
        return entry.name
    if isinstance(entry, Mapping) and len(entry) == 1:
        return str(next(iter(entry)))
    return str(getattr(entry, "name", None) or type(entry).__name__)


def _check_vllm_url(backend: Any, where: str) -> None:
    """``url`` is what people write; the vllm backend's option is ``base_url``."""
    if isinstance(backend, Mapping) and len(backend) == 1:
        ((name, opts),) = backend.items()
        if name == "vllm" and isinstance(opts, Mapping) and "url" in opts:
            raise ConfigError(
                f"{where}: the vllm backend takes 'base_url', not 'url'",
                hint="{'vllm': {'base_url': 'http://127.0.0.1:8000', 'model': '...'}} "
                "(or 'base_urls': [...] for replicas)",
            )


def _with_api_key(backend: Any, key: str | None) -> Any:
    """``backend`` with ``api_key`` added when it is a ``vllm`` backend that sets none."""
    if key is None:
        return backend
    if isinstance(backend, Mapping) and len(backend) == 1:
        ((name, opts),) = backend.items()
        if name == "vllm" and isinstance(opts, Mapping) and "api_key" not in opts:
            return {name: {**opts, "api_key": key}}
    if isinstance(backend, Use) and backend.target == "vllm" and "api_key" not in backend.options:
        return Use("vllm", **backend.options, api_key=key)
    return backend


def build_pipeline(
    backend: Any,
    backends: Mapping[str, Any],
    middleware: Sequence[Any],
    *,
    max_retries: int | None,
    api_key: str | None,
    tracing: Mapping[str, Any] | None,
) -> Pipeline:
    """A real one-step :class:`Pipeline` over these backends and middleware, built exactly
    as ``flowopt.pipeline(...)`` builds one (same parsing, same ConfigError/SpecError on a
    bad name or option). ``max_retries`` adds a ``retry`` layer innermost (where the
    recommended order puts resilience) unless the stack already retries."""
    if backend is None:
        raise ConfigError(
            "ChatFlowopt needs a backend",
            hint="ChatFlowopt(backend={'vllm': {'base_url': 'http://127.0.0.1:8000', "
            "'model': 'qwen0.5b'}}), or ChatFlowopt.from_pipeline(pipe)",
        )
    _check_vllm_url(backend, "backend")
    for name, other in backends.items():
        _check_vllm_url(other, f"backends.{name}")
    stack = list(middleware)
    if max_retries:
        names = {middleware_name(m) for m in stack}
        if names & _RETRY_LAYERS:
            raise ConfigError(
                f"max_retries={max_retries} and the stack's own {sorted(names & _RETRY_LAYERS)} "
                "layer would both retry",
                hint="set the attempts on that layer (e.g. {'retry': 3}) and drop max_retries",
            )
        stack.append({"retry": max_retries + 1})
    return pipeline(
        PIPELINE_NAME,
        backend=_with_api_key(backend, api_key),
        backends={k: _with_api_key(v, api_key) for k, v in backends.items()},
        middleware=stack,
        steps=[_STEP],
        tracing=tracing,
    )


def release_pipeline(pipe: Pipeline) -> None:
    """Close a collected model's own pipeline on flowopt's loop, without waiting (this runs
    in whichever thread the garbage collector does, the loop's own included)."""
    loop = _runner._loop
    if loop is not None and loop.is_running():
        asyncio.run_coroutine_threadsafe(pipe.aclose(), loop)


def whole_chunk(response: Response) -> AIMessageChunk:
    """A complete response as one chunk (tool calls as whole ``tool_call_chunks``)."""
    return AIMessageChunk(
        content=response.text,
        tool_call_chunks=[
            tool_call_chunk(name=c.name, args=c.arguments, id=c.id, index=i)
            for i, c in enumerate(response.tool_calls)
        ],
    )


def has_flowopt_cache(pipe: Pipeline) -> bool:
    """True when the stack holds flowopt's cache middleware (under any name)."""
    return any(
        name == "cache" or type(mw).__name__ == "CacheMiddleware" for name, mw in pipe.middleware
    )


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: "***" if any(s in str(k).lower() for s in _SECRET_KEYS) else _redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return type(value).__name__  # a Python object (a SecretStr, a built layer)


def _use_form(use: Use) -> Any:
    if isinstance(use.target, str):
        return _redact(use.to_spec())
    return {use.name: _redact(dict(use.options))} if use.options else use.name


def describe_stack(pipe: Pipeline) -> dict[str, Any]:
    """The stack as plain, secret-free data: what LangChain traces and keys its own cache
    on (``_identifying_params``), so two models with different stacks never share keys."""
    spec = pipe.spec
    out: dict[str, Any] = {
        "pipeline": spec.name,
        "backend": _use_form(spec.backend),
        "middleware": [_use_form(m) for m in spec.middleware],
    }
    if spec.backends:
        out["backends"] = {k: _use_form(v) for k, v in spec.backends.items()}
    if spec.defaults:
        out["defaults"] = _redact(spec.defaults)
    return out


# -- tools -----------------------------------------------------------------------------
def format_tools(tools: Sequence[Any], *, strict: bool | None = None) -> list[dict[str, Any]]:
    """Tools in OpenAI's form (what ``Request.tools`` and vLLM take)."""
    out = []
    for t in tools:
        if isinstance(t, Mapping) and t.get("type") == "function" and "function" in t:
            out.append(dict(t))  # already OpenAI's form: kept as given
        else:
            out.append(convert_to_openai_tool(t, strict=strict))
    return out


def _tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(t["function"]["name"]) for t in tools if isinstance(t.get("function"), Mapping)]


def normalise_tool_choice(
    choice: Any, tools: Sequence[Mapping[str, Any]]
) -> str | dict[str, Any] | None:
    """LangChain's ``tool_choice`` spellings in OpenAI's: ``"any"``/``True`` ->
    ``"required"``, a tool's name -> ``{"type": "function", "function": {"name": ...}}``;
    ``"auto"``, ``"none"``, ``"required"`` and dicts pass; ``None``/``False`` -> unset."""
    if choice is None or choice is False:
        return None
    if choice is True or choice in ("any", "required"):
        return "required"
    if choice in ("auto", "none"):
        return str(choice)
    if isinstance(choice, Mapping):
        return dict(choice)
    if isinstance(choice, str):
        names = _tool_names(tools)
        if choice in names:
            return {"type": "function", "function": {"name": choice}}
        raise InvalidRequestError(
            f"tool_choice {choice!r} names no bound tool (bound: {names})",
            hint="use a bound tool's name, 'auto', 'none', 'any' or 'required'",
            param="tool_choice",
        )
    raise InvalidRequestError(
        f"tool_choice must be a string, a bool or a dict, got {type(choice).__name__}",
        hint="e.g. tool_choice='any' or tool_choice='my_tool'",
        param="tool_choice",
    )


def response_format_for(schema: Any, *, strict: bool | None = None) -> dict[str, Any]:
    """OpenAI's ``json_schema`` response format for a Pydantic class, TypedDict, JSON
    schema or OpenAI tool; vLLM enforces it with structured outputs (guided decoding)."""
    if isinstance(schema, Mapping) and schema.get("type") in ("json_schema", "json_object"):
        return dict(schema)  # already a response format
    fn = convert_to_openai_tool(schema)["function"]
    spec: dict[str, Any] = {"name": fn["name"], "schema": fn.get("parameters") or {}}
    if fn.get("description"):
        spec["description"] = fn["description"]
    if strict is not None:
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}


# -- one call --------------------------------------------------------------------------
def build_request(
    messages: Sequence[BaseMessage],
    *,
    base: Mapping[str, Any],
    stop: Sequence[str] | None,
    call: dict[str, Any],
    model_kwargs: Mapping[str, Any],
    identity: Mapping[str, Any],
    timeout: float | None,
    stream: bool,
) -> tuple[Request, str | None]:
    """One LangChain call as ``(Request, backend name to pin or None)``.

    ``base`` holds the model's sampling fields (``None`` = server default), ``call`` the
    call's kwargs (what ``bind``/``bind_tools``/``invoke(**kw)`` added; consumed here).
    Unknown call kwargs join ``model_kwargs`` in ``Params.extra``, sent to the server as
    given, as ChatOpenAI sends them."""
    fields = {k: v for k, v in base.items() if v is not None}
    for key in _SAMPLING:
        if call.get(key) is not None:
            fields[key] = call[key]
    if stop is not None:
        fields["stop"] = tuple(stop)
    if call.get("response_format") is not None:
        fields["response_format"] = response_format_for(call["response_format"])
    extra = {
        **(fields.get("extra") or {}),
        **model_kwargs,
        **{k: v for k, v in call.items() if k not in CALL_KEYS},
    }
    if extra:
        fields["extra"] = extra
    params = Params.parse(fields)
    tools = format_tools(call.get("tools") or ())
    limit = call.get("timeout", timeout)
    metadata = {**(identity.get("request_metadata") or {}), **(call.get("request_metadata") or {})}
    request = Request(
        messages=to_flowopt_messages(messages),
        model=call.get("model") or identity.get("model"),
        params=params,
        stream=stream,
        tenant=call.get("tenant") or identity.get("tenant"),
        user=call.get("user") or identity.get("user"),
        deadline=None if limit is None else time.monotonic() + float(limit),
        metadata=metadata,
        tools=tuple(tools),
        tool_choice=normalise_tool_choice(call.get("tool_choice"), tools),
        parallel_tool_calls=call.get("parallel_tool_calls"),
    )
    return request, call.get("backend") or identity.get("route")
