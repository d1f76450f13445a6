"""An agent's model call as a flowopt request, and the answer back, for FlowoptMiddleware.

Why translate at all, when LangChain makes the call: flowopt's layers decide on flowopt
values. The cache keys on :class:`~flowopt.types.Request` (messages, tool schemas,
``tool_choice``, sampling parameters, the structured-output schema, the model), the
resilience layers match on flowopt's error types, the spans read
:class:`~flowopt.types.Response`. So a ``ModelRequest`` becomes a ``Request`` that holds
everything that changes the answer, the handler's ``ModelResponse`` becomes a ``Response``
(text, tool calls, usage, finish reason), a model's exception becomes the
:class:`~flowopt.errors.BackendError` it means (429/5xx/timeout/connection: retryable),
and an answer flowopt produced itself (a cache hit, a stale answer) becomes the
``ModelResponse`` LangChain would have built, structured output included.

Sampling parameters come from the model's LangSmith parameters (``_get_ls_params``: every
LangChain chat model reports its temperature, max tokens and stop there) overlaid with the
request's ``model_settings``; settings flowopt has no field for go to ``Params.extra``, so
they are part of the cache key too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from langchain.agents.middleware.types import ModelRequest, ModelResponse
from langchain.agents.structured_output import (
    AutoStrategy,
    ProviderStrategy,
    ProviderStrategyBinding,
    ToolStrategy,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, convert_to_messages
from langchain_core.utils.function_calling import convert_to_openai_tool

from flowopt.errors import (
    BackendError,
    BackendHTTPError,
    BackendTimeout,
    BackendUnavailable,
    FlowoptError,
)
from flowopt.langchain._convert import response_metadata, to_ai_message, to_flowopt_messages
from flowopt.messages import Message, ToolCall
from flowopt.types import Params, Request, Response, TokenLogprob, Usage

__all__ = [
    "RESULT_KEY",
    "annotate",
    "backend_error",
    "lc_messages",
    "model_identity",
    "model_name",
    "model_provider",
    "original_error",
    "overrides",
    "replayed",
    "to_request",
    "to_response",
]

RESULT_KEY = "langchain.result"
"""``Response.metadata`` key naming the handler result a response was made from."""

_URL_ATTRS = ("openai_api_base", "base_url", "api_base", "anthropic_api_url", "endpoint")
_PARAMS = ("temperature", "top_p", "max_tokens", "seed", "stop", "logprobs", "top_logprobs")
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "STOP": "stop",
    "max_tokens": "length",
    "MAX_TOKENS": "length",
    "tool_use": "tool_calls",
}


# -- the model -------------------------------------------------------------------------------
def _ls_params(model: BaseChatModel) -> dict[str, Any]:
    try:
        return dict(model._get_ls_params())
    except Exception:  # a third-party model whose LangSmith params need arguments
        return {}


def model_name(model: BaseChatModel) -> str:
    """The model's name as its provider knows it (``gen_ai.request.model``)."""
    name = _ls_params(model).get("ls_model_name")
    name = name or getattr(model, "model_name", None) or getattr(model, "model", None)
    return str(name or type(model).__name__)


def model_provider(model: BaseChatModel) -> str:
    """The provider name on spans (``openai``, ``anthropic``...)."""
    return str(_ls_params(model).get("ls_provider") or model._llm_type or "langchain")


def model_identity(model: BaseChatModel) -> str:
    """What distinguishes this model's answers: class, provider, name and endpoint."""
    url = next((v for a in _URL_ATTRS if isinstance(v := getattr(model, a, None), str) and v), None)
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    return f"{kind}|{model_provider(model)}|{model_name(model)}|{url or ''}"


def _params(model: BaseChatModel, settings: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Typed sampling parameters of this call, and whether all of them could be read."""
    ls = _ls_params(model)
    values: dict[str, Any] = {
        "temperature": ls.get("ls_temperature"),
        "max_tokens": ls.get("ls_max_tokens"),
        "stop": ls.get("ls_stop"),
        "top_p": getattr(model, "top_p", None),
        "seed": getattr(model, "seed", None),
    }
    for k in ("temperature", "top_p", "seed", "stop", "max_tokens"):
        if k in settings:
            values[k] = settings[k]
    if "max_completion_tokens" in settings:
        values["max_tokens"] = settings["max_completion_tokens"]
    clean = {k: v for k, v in values.items() if v is not None}
    if isinstance(clean.get("stop"), str):
        clean["stop"] = (clean["stop"],)
    try:
        Params(**clean)
    except (FlowoptError, TypeError, ValueError):
        return {}, False  # an unusual value: keep it in extra, leave temperature unknown
    return clean, True


# -- ModelRequest -> Request -----------------------------------------------------------------
def _tools(tools: Sequence[Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Function tools as OpenAI schemas; anything else (a provider's built-in tool) apart."""
    schemas: list[dict[str, Any]] = []
    other: list[Any] = []
    for t in tools:
        try:
            schema: Any = convert_to_openai_tool(t)
        except Exception:
            schema = None
        fn = schema.get("function") if isinstance(schema, Mapping) else None
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            schemas.append(dict(schema))
        else:
            other.append(t if isinstance(t, Mapping) else repr(t))
    return schemas, other


def _tool_choice(choice: Any) -> str | dict[str, Any] | None:
    """LangChain's ``tool_choice`` in OpenAI's words (``any`` is ``required``; a bare tool
    name is a named choice)."""
    if choice is None or choice is False:
        return None
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, str):
        if choice in ("auto", "none", "required"):
            return choice
        return {"type": "function", "function": {"name": choice}}
    if isinstance(choice, Mapping):
        return dict(choice)
    return str(choice)


def _schema_json(schema: Any) -> Any:
    if isinstance(schema, Mapping):
        return dict(schema)
    try:
        return [s.json_schema for s in ToolStrategy(schema=schema).schema_specs]
    except Exception:
        return getattr(schema, "__qualname__", None) or repr(schema)


def _response_format(rf: Any) -> dict[str, Any] | None:
    """The structured-output request as a JSON-ready value (part of the cache key)."""
    if rf is None:
        return None
    specs = getattr(rf, "schema_specs", None)
    if specs is None and isinstance(rf, ProviderStrategy):
        specs = [rf.schema_spec]
    out: dict[str, Any] = {"strategy": type(rf).__name__}
    if specs is not None:
        out["schemas"] = [[s.name, s.json_schema, s.strict] for s in specs]
    else:
        out["schema"] = _schema_json(getattr(rf, "schema", rf))
    return {"langchain": out}


def to_request(lc: ModelRequest[Any], *, tenant: str | None, user: str | None) -> Request:
    """The flowopt request of one agent model call (raises InvalidRequestError for a
    conversation flowopt cannot read)."""
    msgs: list[BaseMessage] = list(lc.messages)
    if lc.system_message is not None:
        msgs.insert(0, lc.system_message)
    settings = dict(lc.model_settings)
    typed, ok = _params(lc.model, settings)
    extra: dict[str, Any] = {
        k: v for k, v in settings.items() if k not in typed and k != "parallel_tool_calls"
    }
    if not ok:
        extra["langchain.params"] = repr(_ls_params(lc.model))
    extra["langchain.model"] = model_identity(lc.model)
    schemas, other = _tools(lc.tools)
    if other:
        extra["langchain.provider_tools"] = other
    params = Params(**typed, extra=extra, response_format=_response_format(lc.response_format))
    ptc = settings.get("parallel_tool_calls")
    return Request(
        messages=to_flowopt_messages(msgs),
        model=model_name(lc.model),
        params=params,
        tools=tuple(schemas),
        tool_choice=_tool_choice(lc.tool_choice),
        parallel_tool_calls=ptc if isinstance(ptc, bool) else None,
        tenant=tenant,
        user=user,
        metadata={"langchain": True},
    )


# -- what flowopt's layers changed, as ModelRequest overrides --------------------------------
def lc_messages(messages: Sequence[Message]) -> list[BaseMessage]:
    """flowopt messages as LangChain messages (tool calls and tool call ids kept)."""
    raw = []
    for m in messages:
        d = m.to_openai()
        if d.get("content") is None:
            d["content"] = ""
        raw.append(d)
    return list(convert_to_messages(raw))


def overrides(lc: ModelRequest[Any], base: Request, sent: Request) -> dict[str, Any]:
    """``ModelRequest.override`` arguments for what a layer changed between the translated
    request ``base`` and the request it ``sent`` (messages, sampling parameters)."""
    out: dict[str, Any] = {}
    if sent.messages != base.messages:
        msgs = lc_messages(sent.messages)
        if msgs and isinstance(msgs[0], SystemMessage):
            out["system_message"], msgs = msgs[0], msgs[1:]
        else:
            out["system_message"] = None
        out["messages"] = msgs
    changed = {
        k: getattr(sent.params, k)
        for k in _PARAMS
        if getattr(sent.params, k) != getattr(base.params, k)
    }
    if changed:
        if "stop" in changed:
            changed["stop"] = list(changed["stop"])
        out["model_settings"] = {**lc.model_settings, **changed}
    return out


# -- ModelResponse -> Response ---------------------------------------------------------------
def _ai_message(result: Any) -> AIMessage | None:
    if isinstance(result, AIMessage):
        return result
    return next((m for m in getattr(result, "result", ()) if isinstance(m, AIMessage)), None)


def _logprobs(raw: Any) -> tuple[TokenLogprob, ...] | None:
    """OpenAI's ``logprobs.content`` (as ChatOpenAI keeps it) as flowopt's logprobs."""
    content = raw.get("content") if isinstance(raw, Mapping) else None
    if not isinstance(content, list):
        return None
    out = []
    for t in content:
        top = tuple((str(a["token"]), float(a["logprob"])) for a in t.get("top_logprobs") or ())
        out.append(TokenLogprob(str(t["token"]), float(t["logprob"]), top))
    return tuple(out)


def to_response(
    result: Any, *, fallback_model: str, backend: str, endpoint: str, started: float, key: str
) -> Response:
    """The handler's result (a ``ModelResponse``, or a bare ``AIMessage``) as a flowopt
    response; ``key`` names the result in ``metadata`` so the middleware can hand
    LangChain the very object the handler built."""
    msg = _ai_message(result)
    latency = (time.perf_counter() - started) * 1000.0
    if msg is None:
        empty = {RESULT_KEY: key}
        return Response("", fallback_model, latency_ms=latency, metadata=empty)
    calls = [
        ToolCall(tc.get("id") or f"call_{i}", tc["name"], json.dumps(tc["args"]))
        for i, tc in enumerate(msg.tool_calls)
    ]
    calls += [
        ToolCall(tc.get("id") or f"invalid_{i}", tc.get("name") or "", tc.get("args") or "")
        for i, tc in enumerate(msg.invalid_tool_calls)
    ]
    rm = msg.response_metadata
    raw = rm.get("finish_reason") or rm.get("stop_reason") or rm.get("done_reason")
    finish = "tool_calls" if calls else _FINISH.get(str(raw), str(raw) if raw else "stop")
    um = msg.usage_metadata
    usage = Usage()
    if um:
        cached = (um.get("input_token_details") or {}).get("cache_read") or 0
        usage = Usage(um.get("input_tokens", 0), um.get("output_tokens", 0), cached)
    md: dict[str, Any] = {RESULT_KEY: key}
    if msg.id:
        md["response_id"] = msg.id
    return Response(
        text=msg.text,
        model=str(rm.get("model_name") or fallback_model),
        usage=usage,
        finish_reason=finish,
        latency_ms=latency,
        logprobs=_logprobs(rm.get("logprobs")),
        backend=backend,
        endpoint=endpoint,
        tool_calls=tuple(calls),
        metadata=md,
    )


# -- Response -> ModelResponse ---------------------------------------------------------------
def annotate(result: ModelResponse[Any], response: Response) -> ModelResponse[Any]:
    """The handler's own result, its AI message carrying flowopt's decisions in
    ``response_metadata['flowopt']`` (nothing else changed: structured output, extra
    messages and ids are LangChain's)."""
    msgs = list(result.result)
    for i, m in enumerate(msgs):
        if isinstance(m, AIMessage):
            meta = {**m.response_metadata, "flowopt": response_metadata(response)["flowopt"]}
            msgs[i] = m.model_copy(update={"response_metadata": meta})
            break
    return ModelResponse(result=msgs, structured_response=result.structured_response)


def _structured(rf: Any, msg: AIMessage) -> Any:
    """The structured response LangChain would have parsed from this text answer: a
    provider-strategy schema is parsed from the text; a tool strategy answers with a tool
    call, which is never cached, so a text answer has none."""
    if rf is None or isinstance(rf, ToolStrategy):
        return None
    if not isinstance(rf, ProviderStrategy):
        rf = ProviderStrategy(schema=rf.schema if isinstance(rf, AutoStrategy) else rf)
    try:
        return ProviderStrategyBinding.from_schema_spec(rf.schema_spec).parse(msg)
    except Exception:
        return None


def replayed(response: Response, lc: ModelRequest[Any]) -> ModelResponse[Any]:
    """An answer flowopt produced without the handler (cache hit, stale answer) as the
    ``ModelResponse`` LangChain would have made of it."""
    msg = to_ai_message(response)
    return ModelResponse(result=[msg], structured_response=_structured(lc.response_format, msg))


# -- errors ---------------------------------------------------------------------------------
def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def backend_error(exc: BaseException, endpoint: str) -> BaseException:
    """The flowopt error a model's exception means, or ``exc`` itself when it is not a
    transport failure (then nothing retries it). The original rides along as
    ``langchain_error`` so :func:`original_error` can give the caller back its own type."""
    if isinstance(exc, FlowoptError):
        return exc
    names = " ".join(c.__name__ for c in type(exc).__mro__)
    status = getattr(exc, "status_code", None)
    text = f"{type(exc).__name__}: {str(exc)[:300]}"
    err: BackendError
    if isinstance(status, int):
        err = BackendHTTPError(
            text, endpoint=endpoint, status=status, retry_after=_retry_after(exc)
        )
    elif "Timeout" in names:
        err = BackendTimeout(text, endpoint=endpoint)
    elif "Connect" in names:
        err = BackendUnavailable(text, endpoint=endpoint)
    else:
        return exc
    setattr(err, "langchain_error", exc)  # noqa: B010 (an attribute of this instance only)
    return err


def original_error(exc: BaseException) -> BaseException:
    """The model's own exception behind a translated one, with flowopt's notes (retries,
    fallback path) added; any other exception unchanged."""
    orig = getattr(exc, "langchain_error", None)
    if not isinstance(orig, BaseException):
        return exc
    for note in getattr(exc, "__notes__", ()):
        orig.add_note(note)
    return orig
