"""One batch line through the gateway's own request path: same parser, same middleware.

Why through the gateway's objects and not a bare backend call: a line must be answered
exactly as ``POST /v1/chat/completions`` would answer it (cache, triage, resilience,
tenant limits, tracing; the same body in the output file), so it is parsed by the route's
parser, resolved against the same model table and sent through ``Pipeline.acall`` — at
the batch's priority, so the shedder serves interactive requests first.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from flowopt.batch._lines import ENDPOINTS
from flowopt.gateway._wire import chat_json, completion_json, parse_call
from flowopt.gateway.errors import HTTPProblem, problem_from

if TYPE_CHECKING:
    from flowopt.batch.store import Claimed
    from flowopt.gateway.app import Gateway

__all__ = ["LineExecutor", "Outcome"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a line got: the HTTP status and body the route would have answered, and
    whether trying again may help (``retry``), and after how long (``wait_s``)."""

    status: int
    body: Any
    request_id: str
    retry: bool = False
    shed: bool = False
    wait_s: float = 0.0


class LineExecutor:
    """Answers lines with a :class:`~flowopt.gateway.app.Gateway` (its pipeline, model table
    and embedding model)."""

    def __init__(self, gw: Gateway, priority: int) -> None:
        self.gw = gw
        self.priority = priority

    async def __call__(self, line: Claimed) -> Outcome:
        rid = uuid.uuid4().hex[:16]
        tracer = self.gw.pipe.tracing.tracer
        with tracer.start_as_current_span("batch line", kind=SpanKind.INTERNAL) as span:
            if span.is_recording():
                span.set_attributes(
                    {"flowopt.batch.id": line.job_id, "flowopt.batch.line": line.number}
                )
            try:
                body = await self._answer(line, json.loads(line.body), rid)
            except Exception as exc:
                return _failure(exc, rid)
        return Outcome(200, body, rid)

    async def _answer(self, line: Claimed, body: Any, rid: str) -> Any:
        kind = ENDPOINTS[line.endpoint]
        gw = self.gw
        if kind == "embedding":
            from flowopt.gateway._embeddings import parse_embedding

            ecall = parse_embedding(body)
            if not gw.embeddings.models:
                raise HTTPProblem(
                    404,
                    "no embedding model is installed on this server: pip install 'flowopt[cache]'",
                    code="model_not_found",
                    param="model",
                )
            who = line.tenant if line.tenant is not None else ecall.user
            payload, _, _ = await gw.embeddings._answer(ecall, who, rid)
            return json.loads(payload)
        call = parse_call(body, kind=kind, tenant=line.tenant, request_id=rid)
        request = call.request.replace(
            priority=self.priority,
            metadata={**call.request.metadata, "batch_id": line.job_id},
        )
        call = replace(call, request=request)
        target = gw.models.resolve(call.model)
        if target.kind == "graph" and kind != "chat":
            raise HTTPProblem(
                400, f"the graph model {target.model!r} answers chat requests only", param="model"
            )
        response = await gw._answer(call, target)
        writer = chat_json if kind == "chat" else completion_json
        return json.loads(writer(call, response, target.model))


def _failure(exc: Exception, rid: str) -> Outcome:
    problem = problem_from(exc)
    status = problem.status
    shed = status == 503 and isinstance(problem.code, str) and problem.code.startswith("shed")
    retry = status in (408, 409, 429) or status >= 500
    wait = problem.headers.get("Retry-After")
    return Outcome(
        status,
        problem.body(),
        rid,
        retry=retry,
        shed=shed,
        wait_s=float(wait) if wait else 0.0,
    )
