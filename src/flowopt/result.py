"""What a pipeline run returns, and the events a streamed run yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowopt.types import Decision, Response, Usage

__all__ = ["Hop", "Result", "StepEvent", "TokenEvent"]


@dataclass(frozen=True, slots=True)
class Hop:
    """One LLM call made by one step, with the complete response it got."""

    step: str
    response: Response

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, **self.response.to_dict()}


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one pipeline run.

    ``text`` is the output of the last step that ran; ``outputs`` holds every step's
    output by key; ``hops`` lists every LLM call in order, each with its decisions.
    """

    text: str
    outputs: dict[str, Any]
    hops: tuple[Hop, ...]
    latency_ms: float
    pipeline: str
    trace_id: str | None = None

    @property
    def usage(self) -> Usage:
        total = Usage()
        for h in self.hops:
            total = total + h.response.usage
        return total

    @property
    def model(self) -> str | None:
        return self.hops[-1].response.model if self.hops else None

    @property
    def ttft_ms(self) -> float | None:
        for h in self.hops:
            if h.response.ttft_ms is not None:
                return h.response.ttft_ms
        return None

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return tuple(d for h in self.hops for d in h.response.decisions)

    @property
    def cost(self) -> float | None:
        costs = [h.response.cost for h in self.hops if h.response.cost is not None]
        return sum(costs) if costs else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``flowopt run --json``."""
        u = self.usage
        out: dict[str, Any] = {
            "text": self.text,
            "model": self.model,
            "usage": {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens},
            "latency_ms": round(self.latency_ms, 3),
            "decisions": [
                {"step": h.step, **d.to_dict()} for h in self.hops for d in h.response.decisions
            ],
            "steps": [h.to_dict() for h in self.hops],
            "outputs": {k: v for k, v in self.outputs.items() if _jsonable(v)},
            "pipeline": self.pipeline,
        }
        if self.ttft_ms is not None:
            out["ttft_ms"] = round(self.ttft_ms, 3)
        if self.cost is not None:
            out["cost"] = self.cost
        if self.trace_id:
            out["trace_id"] = self.trace_id
        return out


def _jsonable(v: Any) -> bool:
    return isinstance(v, str | int | float | bool | list | dict) or v is None


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """A piece of text streamed by an LLM step."""

    step: str
    text: str


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A step finished; ``output`` is what it wrote to the state."""

    step: str
    output: Any = field(default=None)
