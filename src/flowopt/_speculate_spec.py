"""The spec of a speculated edge, and the build-time checks that make speculation safe.

Why a separate module: :mod:`flowopt.spec` holds the pipeline's shape; what may be
speculated is a policy of its own (closed-set commit keys, no side effects on a guess),
and every rule here refuses at build time with the step named, so nothing unsafe is
ever discovered at run time.

The commit rule is exact: step B's speculative result is kept only when step A's real
output *equals* the guessed value, so B ran on exactly the state it would have seen
without speculation. A guess is therefore a value A can produce, drawn from a closed set
(``labels``, or A's ``structured_outputs.choice``); free text is never speculated on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flowopt.errors import ConfigError
from flowopt.middleware.base import Use

__all__ = ["SIDE_EFFECT_MIDDLEWARE", "SpeculateSpec", "check_speculation", "edge_labels"]

SIDE_EFFECT_MIDDLEWARE = frozenset({"memory"})
"""Middleware that writes on every LLM call (memory writes): a step behind them is never
speculated, or a guess would leave a trace in the store."""


class SpeculateSpec(BaseModel):
    """Speculate on edge ``from -> to``: start ``to`` on a guess of ``from``'s output.

    YAML: ``speculate: [{from: classify, to: answer, guesser: {tfidf: {model: m.json}}}]``.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, arbitrary_types_allowed=True
    )

    source: str = Field(alias="from", description="Step A, whose output is guessed.")
    target: str = Field(alias="to", description="Step B, started on the guess.")
    guesser: Use = Field(description="{name: {options}} of a registered guesser.")
    labels: tuple[str, ...] | None = Field(
        None,
        description="The closed set A's output is drawn from (default: A's "
        "params.extra.structured_outputs.choice).",
    )
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Least guess confidence.")
    cost_factor: float = Field(
        1.0,
        ge=0.0,
        description="Weight of wasted engine time against saved latency; speculate only "
        "when p*saving > cost_factor*(1-p)*waste.",
    )
    min_samples: int = Field(
        10,
        ge=1,
        description="Judged guesses the edge's observed hit rate (per confidence bin, per "
        "label) needs to weigh as much as the guesser's own confidence.",
    )
    max_waste: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Budget of B's tokens wrong guesses may waste (a share); the most "
        "probable guesses get it first. 1 turns the budget off.",
    )
    max_queued: int | None = Field(
        0,
        ge=0,
        description="Speculate only while B's backend reports at most this many requests "
        "waiting (vLLM's num_requests_waiting, read off the request path); null: do not "
        "read the backend's queue.",
    )
    top_k: int = Field(1, ge=1, le=4, description="Guesses started at once (each counted).")

    @field_validator("guesser", mode="before")
    @classmethod
    def _guesser(cls, v: Any) -> Use:
        try:
            return Use.parse(v, where="speculate.guesser")
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @property
    def edge(self) -> str:
        return f"{self.source}->{self.target}"

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(by_alias=True, exclude_defaults=True, exclude={"guesser"})
        out["guesser"] = self.guesser.to_spec()
        if "labels" in out:
            out["labels"] = list(out["labels"])
        return {"from": out.pop("from"), "to": out.pop("to"), **out}


def _choice(params: Mapping[str, Any]) -> tuple[str, ...] | None:
    extra = params.get("extra") or {}
    so = extra.get("structured_outputs") if isinstance(extra, Mapping) else None
    choice = so.get("choice") if isinstance(so, Mapping) else None
    if isinstance(choice, list | tuple) and choice and all(isinstance(c, str) for c in choice):
        return tuple(choice)
    return None


def edge_labels(spec: Any, edge: SpeculateSpec) -> tuple[str, ...]:
    """The closed set of values step A can output (the guesses allowed on ``edge``)."""
    a = next(s for s in spec.steps if s.name == edge.source)
    choice = _choice({**spec.defaults, **a.params}) if a.kind == "llm" else None
    labels = edge.labels or choice
    if not labels:
        raise ValueError(
            f"speculate {edge.edge}: step {a.name!r} outputs free text, which is never "
            "speculated on; constrain it with params.extra.structured_outputs.choice or "
            "declare the closed set with 'labels'"
        )
    if edge.labels and choice and not set(edge.labels) <= set(choice):
        raise ValueError(
            f"speculate {edge.edge}: labels {sorted(set(edge.labels) - set(choice))} "
            f"are not in step {a.name!r}'s structured_outputs.choice"
        )
    return tuple(labels)


def _successors(spec: Any, name: str) -> set[str]:
    names = [s.name for s in spec.steps]
    out: set[str] = set()
    if spec.edges is None:
        if not spec.routes and name in names[:-1]:
            out.add(names[names.index(name) + 1])
    else:
        out |= {b for a, b in spec.edges if a == name}
    for r in spec.routes:
        if r.source == name:
            out |= set(r.cases.values()) | ({r.default} if r.default else set())
    return out


def check_speculation(spec: Any) -> None:
    """Refuse (ValueError naming the step) any speculated edge that could change a result
    or run a side effect on a guess. ``spec`` is a :class:`~flowopt.spec.PipelineSpec`."""
    by_name = {s.name: s for s in spec.steps}
    sources = [e.source for e in spec.speculate]
    targets = [e.target for e in spec.speculate]
    for e in spec.speculate:
        for n in (e.source, e.target):
            if n not in by_name:
                raise ValueError(f"speculate {e.edge}: no step named {n!r}")
        if sources.count(e.source) > 1 or targets.count(e.target) > 1:
            raise ValueError(f"speculate {e.edge}: a step is in two speculated edges")
        if e.source in targets or e.target in sources:
            raise ValueError(f"speculate {e.edge}: chained speculation is not supported")
        if _successors(spec, e.source) != {e.target}:
            raise ValueError(
                f"speculate {e.edge}: step {e.source!r} must go to {e.target!r} by a plain "
                "edge and nowhere else (no route after it)"
            )
        into_b = {n for n in by_name if e.target in _successors(spec, n)}
        first = (
            spec.steps[0].name
            if spec.edges is None or not any(a == "START" for a, _ in spec.edges)
            else None
        )
        starts = {b for a, b in spec.edges or () if a == "START"} | ({first} - {None})
        if into_b != {e.source} or e.target in starts:
            raise ValueError(
                f"speculate {e.edge}: step {e.target!r} must be reached only from {e.source!r}"
            )
        b = by_name[e.target]
        if b.kind == "function" and not b.pure:
            raise ValueError(
                f"speculate {e.edge}: step {b.name!r} is a function step not declared pure; "
                "speculation would run its side effects (or interrupts) on a guess. Declare "
                "'pure: true' on the step only if it has none"
            )
        params = {**spec.defaults, **b.params}
        extra = params.get("extra") or {}
        if isinstance(extra, Mapping) and (extra.get("tools") or extra.get("functions")):
            raise ValueError(
                f"speculate {e.edge}: step {b.name!r} calls tools, which are not declared "
                "pure; speculation would run them on a guess"
            )
        uses = {m.name for m in spec.middleware}
        if uses & SIDE_EFFECT_MIDDLEWARE:
            raise ValueError(
                f"speculate {e.edge}: step {b.name!r} runs behind middleware "
                f"{sorted(uses & SIDE_EFFECT_MIDDLEWARE)} that writes memories on every "
                "call; speculation would write on a guess"
            )
        edge_labels(spec, e)
