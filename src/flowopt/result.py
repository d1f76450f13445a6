"""What a pipeline run returns, and the events a streamed run yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowopt.types import Decision, Response, Usage

__all__ = ["Hop", "Result", "Speculation", "StepEvent", "TokenEvent"]


@dataclass(frozen=True, slots=True)
class Hop:
    """One LLM call made by one step, with the complete response it got."""

    step: str
    response: Response

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, **self.response.to_dict()}


@dataclass(frozen=True, slots=True)
class Speculation:
    """The accounting of one speculated edge in one run (docs/speculation.md).

    Why on the result and not only on spans: a wrong guess costs real engine tokens that
    no hop shows (the guessed request was cancelled, or its answer thrown away), and a
    user reading a run's cost must see them. ``wasted`` counts them: from the response
    when a wrong branch finished, else estimated from the share of B's usual time it ran
    (``estimated`` says so). ``wasted_cost`` is their price where the responses carry
    one (a routing middleware with a price table), else ``None``.

    ``outcome`` is ``hit``, ``miss``, ``hit_rerun`` (right guess whose request failed:
    B ran again plainly) or ``skipped_<why>`` (``gate``, ``budget``, ``shed``,
    ``queue``) when no guess was started. ``queue_unknown``: the gate could not read
    B's backend queue fresh for this decision (it then does not block on it).
    """

    edge: str
    outcome: str
    guess: str | None = None
    confidence: float | None = None
    branches: int = 0
    saved_ms: float = 0.0
    lost_ms: float = 0.0
    wasted: Usage = field(default_factory=Usage)
    wasted_cost: float | None = None
    estimated: bool = False
    queue_unknown: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "edge": self.edge,
            "outcome": self.outcome,
            "branches": self.branches,
            "saved_ms": round(self.saved_ms, 3),
            "lost_ms": round(self.lost_ms, 3),
            "wasted_input_tokens": self.wasted.input_tokens,
            "wasted_output_tokens": self.wasted.output_tokens,
        }
        if self.guess is not None:
            out["guess"] = self.guess
            out["confidence"] = self.confidence
        if self.wasted_cost is not None:
            out["wasted_cost"] = self.wasted_cost
        if self.estimated:
            out["estimated"] = True
        if self.queue_unknown:
            out["queue_unknown"] = True
        return out


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
    speculation: tuple[Speculation, ...] = ()

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

    @property
    def wasted(self) -> Usage:
        """Tokens spent on wrong speculative guesses (not in :attr:`usage`)."""
        total = Usage()
        for s in self.speculation:
            total = total + s.wasted
        return total

    @property
    def wasted_cost(self) -> float | None:
        costs = [s.wasted_cost for s in self.speculation if s.wasted_cost is not None]
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
        if self.speculation:
            w = self.wasted
            out["wasted"] = {"input_tokens": w.input_tokens, "output_tokens": w.output_tokens}
            if self.wasted_cost is not None:
                out["wasted"]["cost"] = self.wasted_cost
            out["speculation"] = [s.to_dict() for s in self.speculation]
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
