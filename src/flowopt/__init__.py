"""flowopt: declarative LLM pipelines on LangGraph with optimization middleware over vLLM.

from flowopt import pipeline
pipe = pipeline("support",
                backend={"vllm": {"base_url": "http://127.0.0.1:8000", "model": "smollm2"}},
                middleware=["logging"],
                steps=[{"name": "answer", "prompt": "Answer briefly: {input}"}])
print(pipe.invoke("What is vLLM?", user="alice").text)
"""

from flowopt.backends.base import Backend, ModelInfo
from flowopt.backends.vllm import VLLMBackend
from flowopt.declare import pipeline
from flowopt.errors import (
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    DeadlineExceeded,
    EndpointCoolingDown,
    FlowoptError,
    IncompleteStream,
    InvalidRequestError,
    MissingDependencyError,
    Overloaded,
    PluginConflictError,
    RateLimited,
    RejectedError,
    RunError,
    SpecError,
    StepError,
    StoreError,
    UnknownNameError,
)
from flowopt.middleware.base import CallNext, Middleware, MiddlewareBase, PipelineContext, Use
from flowopt.pipeline import RECOMMENDED_ORDER, Pipeline, load
from flowopt.resilience import (
    Breaker,
    Deadline,
    Fallback,
    LoadShed,
    Resilience,
    Retry,
    RetryBudget,
    TenantLimits,
)
from flowopt.result import Hop, Result, Speculation, StepEvent, TokenEvent
from flowopt.spec import PipelineSpec, SpeculateSpec, StepSpec, load_spec, parse_spec
from flowopt.stream import Stream, replay
from flowopt.tracing import configure_tracing
from flowopt.types import (
    Choice,
    Chunk,
    Decision,
    Message,
    Params,
    Request,
    Response,
    TokenLogprob,
    ToolCall,
    Usage,
)

__version__ = "0.1.0"

# Heavy middleware (embedding models, stores) load on first attribute access, so
# `import flowopt` stays fast for apps that do not use them.
_LAZY = {
    "CacheMiddleware": "flowopt.cache",
    "CacheConfig": "flowopt.cache",
    "Triage": "flowopt.routing.triage",
    "Cascade": "flowopt.routing.cascade",
    "Price": "flowopt.routing.pricing",
    "Tier": "flowopt.routing.pricing",
    "Guess": "flowopt.speculate",
    "speculation_stats": "flowopt.speculate",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flowopt' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "RECOMMENDED_ORDER",
    "Backend",
    "BackendError",
    "BackendHTTPError",
    "BackendProtocolError",
    "BackendTimeout",
    "BackendUnavailable",
    "Breaker",
    "CacheConfig",
    "CacheMiddleware",
    "CallNext",
    "Cascade",
    "Choice",
    "Chunk",
    "ConfigError",
    "Deadline",
    "DeadlineExceeded",
    "Decision",
    "EndpointCoolingDown",
    "Fallback",
    "FlowoptError",
    "Guess",
    "Hop",
    "IncompleteStream",
    "InvalidRequestError",
    "LoadShed",
    "Message",
    "Middleware",
    "MiddlewareBase",
    "MissingDependencyError",
    "ModelInfo",
    "Overloaded",
    "Params",
    "Pipeline",
    "PipelineContext",
    "PipelineSpec",
    "PluginConflictError",
    "Price",
    "RateLimited",
    "RejectedError",
    "Request",
    "Resilience",
    "Response",
    "Result",
    "Retry",
    "RetryBudget",
    "RunError",
    "SpecError",
    "SpeculateSpec",
    "Speculation",
    "StepError",
    "StepEvent",
    "StepSpec",
    "StoreError",
    "Stream",
    "TenantLimits",
    "Tier",
    "TokenEvent",
    "TokenLogprob",
    "ToolCall",
    "Triage",
    "UnknownNameError",
    "Usage",
    "Use",
    "VLLMBackend",
    "__version__",
    "configure_tracing",
    "load",
    "load_spec",
    "parse_spec",
    "pipeline",
    "replay",
    "speculation_stats",
]
