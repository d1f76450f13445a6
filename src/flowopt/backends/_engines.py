"""What each OpenAI-compatible engine behind the ``vllm`` backend can and cannot do.

The ``vllm`` backend speaks the OpenAI API to any compatible server. Servers differ in
what they *silently ignore*: llama.cpp (llama-cpp-python's server) drops fields it does
not know, so a request for vLLM's structured outputs would come back unconstrained, and
``n: 3`` would come back with one choice. With the backend's ``engine`` option set, such a
request fails before it is sent, with an error that names the feature and the fix, and
what has an equivalent is translated (OpenAI's ``json_schema`` response format becomes
llama.cpp's grammar-constrained ``json_object`` with a schema).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowopt.errors import ConfigError, InvalidRequestError
from flowopt.types import Request

__all__ = ["ENGINES", "adapt_payload", "check_engine", "check_request"]

ENGINES = ("vllm", "llamacpp")

# Extra body fields llama.cpp would drop without a word: field -> what to do instead.
_LLAMACPP_IGNORED: dict[str, str] = {
    "structured_outputs": "use response_format {type: json_object, schema: ...} "
    "(or json_schema, which flowopt translates)",
    "guided_json": "use response_format {type: json_object, schema: ...}",
    "guided_regex": "send a GBNF grammar in the 'grammar' field instead",
    "guided_choice": "send a GBNF grammar in the 'grammar' field instead",
    "guided_grammar": "send a GBNF grammar in the 'grammar' field instead",
    "ignore_eos": "send min_tokens (llama.cpp supports it) instead",
    "best_of": "send one request per candidate",
    "use_beam_search": "llama.cpp has no beam search",
}


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ConfigError(
            f"engine must be one of {', '.join(ENGINES)}, got {engine!r}",
            hint="llamacpp for a server started with `flowopt backend up --engine llamacpp`",
        )
    return engine


def check_request(engine: str, request: Request, endpoint: str) -> None:
    """Raise InvalidRequestError when ``engine`` would silently ignore part of ``request``."""
    if engine != "llamacpp":
        return
    extra = request.params.extra
    for key, instead in _LLAMACPP_IGNORED.items():
        if key in extra:
            _refuse(f"{key!r}", instead, request, endpoint)
    n = extra.get("n")
    if isinstance(n, int) and n > 1:
        _refuse("n > 1", "send n separate requests (llama.cpp returns one choice)", request,
                endpoint)  # fmt: skip


def _refuse(feature: str, instead: str, request: Request, endpoint: str) -> None:
    raise InvalidRequestError(
        f"the llama.cpp engine at {endpoint} does not support {feature} (it would ignore "
        "it and answer anyway)",
        hint=f"{instead}; or serve the model with vLLM (`flowopt backend up --engine vllm`)",
        request_id=request.request_id,
    )


def adapt_payload(engine: str, body: dict[str, Any]) -> dict[str, Any]:
    """Translate what has an equivalent on ``engine`` (in place; returns ``body``)."""
    if engine != "llamacpp":
        return body
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        body["response_format"] = (
            {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
        )
    return body
