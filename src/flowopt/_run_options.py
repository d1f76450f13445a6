"""A run's options (identity, deadline, stream, params, the hop log) as they travel through
LangGraph's ``configurable``, and the span helpers that go with them.

Apart from :mod:`flowopt.pipeline` so the pipeline module holds the stack and the graph;
this is the plumbing between a run call and its steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from opentelemetry import trace

from flowopt.result import Hop, Speculation
from flowopt.types import Params

__all__ = ["RunOptions", "run_options", "trace_id_of", "with_parent"]


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What one run carries beside the graph state (LangGraph passes it in the
    ``configurable`` of the run's config)."""

    tenant: str | None
    user: str | None
    deadline: float | None
    stream: bool
    priority: int
    metadata: Mapping[str, Any]
    parent: Any = None  # the OTel context holding the pipeline span
    # step name -> the caller's params merged over the step's (answer steps only)
    params: Mapping[str, Params] = dataclasses.field(default_factory=dict)
    # LLM calls of this run, in order. Kept out of the graph state on purpose: the state
    # must stay serialisable for checkpointers, and responses are not plain data.
    hops: list[Hop] = dataclasses.field(default_factory=list)
    # one record per speculated edge that ran (its wasted tokens: Result.speculation)
    speculation: list[Speculation] = dataclasses.field(default_factory=list)


def run_options(config: RunnableConfig) -> RunOptions:
    return (config.get("configurable") or {})["flowopt"]  # type: ignore[no-any-return]


def with_parent(config: RunnableConfig, span: trace.Span) -> RunnableConfig:
    conf = dict(config.get("configurable") or {})
    opts: RunOptions = conf["flowopt"]
    conf["flowopt"] = dataclasses.replace(opts, parent=trace.set_span_in_context(span))
    return {**config, "configurable": conf}


def trace_id_of(span: trace.Span) -> str | None:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
