"""Triage: send each request to the cheapest tier that should answer it well.

A classifier scores the request (P that the cheapest tier gets it wrong); ``thresholds``
map the score to a tier (two tiers: one threshold; N tiers: N-1 ascending thresholds), or
a rule names the tier outright. The decision is written as the request's route
(``Request.route``), so every layer below — retries, limits, shedding — applies to the
chosen tier too. A pinned request (a step declared on one backend) is never re-routed:
triage passes it through and records ``pinned``. The decision, its reason and score, the cost
and what the strongest tier would have cost go into the response's decision record and
onto the span; ``Response.cost`` is filled.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Discriminator, Tag, model_validator

from flowopt.errors import ConfigError
from flowopt.middleware.base import CallNext, MiddlewareBase, PipelineContext
from flowopt.middleware.options import MiddlewareOptions, PyObject, make_options
from flowopt.routing.classifiers.base import Classifier, Verdict
from flowopt.routing.pricing import Tier, Tiers
from flowopt.stream import when_final
from flowopt.types import Request, Response

__all__ = [
    "EmbeddingClassifierOptions",
    "JudgeClassifierOptions",
    "RuleOptions",
    "RulesClassifierOptions",
    "Triage",
    "TriageOptions",
    "make_classifier",
    "tier_for",
]


class RuleOptions(MiddlewareOptions):
    """One rule of the rules classifier: every condition given must hold."""

    then: str | float
    """A tier name (the request goes there) or a score in [0, 1]."""
    pattern: str | None = None
    """Regular expression searched in the last user message (case-insensitive)."""
    min_chars: int | None = None
    """The last user message has at least this many characters."""
    max_chars: int | None = None
    """The last user message has at most this many characters."""
    metadata: dict[str, Any] | None = None
    """Request metadata entries that must all be equal."""


class RulesClassifierOptions(MiddlewareOptions):
    """The ``rules`` classifier: the first matching rule wins."""

    rules: tuple[RuleOptions, ...] = ()
    """Rules, first match wins."""
    default_score: float = 0.0
    """Score when no rule matches."""
    metadata_key: str | None = "tier"
    """A request whose metadata names a tier under this key goes there."""


class EmbeddingClassifierOptions(MiddlewareOptions):
    """The ``embedding`` router trained by ``flowopt triage train``."""

    path: str
    """The router file (``router.npz``)."""
    k: int | None = None
    """Neighbours consulted (default: as trained)."""
    temperature: float | None = None
    """Softmax temperature over similarities (default: as trained)."""
    prior: float | None = None
    """Strength of the prior towards 0.5 (default: as trained)."""


class JudgeClassifierOptions(MiddlewareOptions):
    """The LLM ``judge``: a model is asked whether the question is hard."""

    backend: str = "default"
    """Pipeline backend that judges."""
    max_chars: int = 2000
    """Characters of the question shown to the judge."""
    on_error_score: float = 1.0
    """Score when the judge fails (1.0: send to the strongest tier)."""


class _Rules(MiddlewareOptions):
    rules: RulesClassifierOptions | None = None
    """Options of the rules classifier."""


class _Embedding(MiddlewareOptions):
    embedding: EmbeddingClassifierOptions
    """Options of the embedding router."""


class _Judge(MiddlewareOptions):
    judge: JudgeClassifierOptions | None = None
    """Options of the LLM judge."""


def _classifier_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "by-name"
    if isinstance(value, BaseModel):
        return f"{next(iter(type(value).model_fields))}-classifier"
    if isinstance(value, Mapping):
        if len(value) == 1 and next(iter(value)) in ("rules", "embedding", "judge"):
            return f"{next(iter(value))}-classifier"
        return None
    return "object" if hasattr(value, "classify") else None


ClassifierOption = Annotated[
    Annotated[Literal["rules", "judge"], Tag("by-name")]
    | Annotated[_Rules, Tag("rules-classifier")]
    | Annotated[_Embedding, Tag("embedding-classifier")]
    | Annotated[_Judge, Tag("judge-classifier")]
    | Annotated[PyObject[Classifier], Tag("object")],
    Discriminator(
        _classifier_kind,
        custom_error_type="classifier",
        custom_error_message="a classifier is rules, judge, {rules: {rules: [...]}}, "
        "{embedding: {path: router.npz}} or {judge: {backend: ...}}",
    ),
]
"""Triage's classifier: a name, a one-key mapping, or (Python) an object with
``classify``."""


class TriageOptions(MiddlewareOptions):
    """Options of ``triage``."""

    tiers: Tiers
    """Two or more tiers, cheapest first: ``[{name, backend, price}]``."""
    classifier: ClassifierOption = "rules"
    """How requests are scored: ``rules``, ``judge``, ``{rules: {rules: [...]}}``,
    ``{embedding: {path: router.npz}}`` or ``{judge: {backend: ...}}``; from Python also
    an object with ``classify``."""
    threshold: float | None = None
    """Two tiers: the score from which the second tier is used (default 0.5)."""
    thresholds: tuple[float, ...] | None = None
    """N tiers: N-1 ascending scores, one per boundary between tiers."""
    respect_route: bool = True
    """Leave a request that an outer layer already routed alone."""

    @model_validator(mode="after")
    def _boundaries(self) -> TriageOptions:
        got = self.boundaries()
        if len(got) != len(self.tiers) - 1 or got != sorted(got):
            raise ValueError(
                f"triage needs {len(self.tiers) - 1} ascending threshold(s), got {got}"
            )
        return self

    def boundaries(self) -> list[float]:
        if self.thresholds is not None:
            return list(self.thresholds)
        return [0.5 if self.threshold is None else self.threshold]


def make_classifier(value: Any) -> Classifier:
    """``{rules: {...}}``, ``{embedding: {path: router.npz}}``, ``{judge: {...}}``, a name,
    or an object with ``classify``."""
    if hasattr(value, "classify"):
        return value  # type: ignore[no-any-return]
    if isinstance(value, BaseModel):  # a validated {kind: options}
        kind = next(iter(type(value).model_fields))
        opts = getattr(value, kind)
        value = {kind: {} if opts is None else opts.model_dump(exclude_none=True)}
    if isinstance(value, str):
        value = {value: {}}
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ConfigError(
            f"classifier: cannot read {value!r}",
            hint="classifier: {embedding: {path: router.npz}} | {rules: {rules: [...]}} | judge",
        )
    ((kind, opts),) = value.items()
    opts = dict(opts or {})
    if kind == "rules":
        from flowopt.routing.classifiers.rules import RulesClassifier

        return RulesClassifier(**opts)
    if kind == "embedding":
        from flowopt.routing.classifiers.embedding import EmbeddingRouter

        if "path" not in opts:
            raise ConfigError(
                "embedding classifier needs path",
                hint="train: flowopt triage train FILE --out router.npz",
            )
        return EmbeddingRouter.load(opts.pop("path"), **opts)
    if kind == "judge":
        from flowopt.routing.classifiers.judge import JudgeClassifier

        return JudgeClassifier(**opts)
    raise ConfigError(f"unknown classifier {kind!r}", hint="use rules, embedding or judge")


def tier_for(tiers: Sequence[Tier], thresholds: Sequence[float], verdict: Verdict) -> Tier:
    if verdict.tier is not None:
        for t in tiers:
            if verdict.tier in (t.name, t.backend):
                return t
    i = sum(1 for th in thresholds if verdict.score >= th)
    return tiers[min(i, len(tiers) - 1)]


class Triage(MiddlewareBase):
    """Options: :class:`TriageOptions` (``tiers``, ``classifier``, ``threshold`` or
    ``thresholds``, ``respect_route``)."""

    name: ClassVar[str] = "triage"
    options_model: ClassVar[type[TriageOptions]] = TriageOptions

    def __init__(self, options: TriageOptions | None = None, /, **kwargs: Any) -> None:
        self.options = opts = make_options(TriageOptions, options, kwargs, name=self.name)
        self.tiers = [t.to_tier() for t in opts.tiers]
        self.thresholds = opts.boundaries()
        self.classifier = make_classifier(opts.classifier)
        self.respect_route = opts.respect_route

    async def setup(self, ctx: PipelineContext) -> None:
        missing = [t.backend for t in self.tiers if t.backend not in ctx.backends]
        if missing:
            raise ConfigError(
                f"triage tiers use backends {missing} that pipeline {ctx.name!r} lacks "
                f"(it has {sorted(ctx.backends)})",
                hint="declare them under `backends:` (the default backend is 'default')",
            )
        bind = getattr(self.classifier, "bind", None)
        if bind is not None:
            bind(ctx.backends)  # checks the backends it names exist

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        if request.pinned:
            response = await call_next(request)
            return response.with_decision(self.decision("pinned", backend=request.route))
        if self.respect_route and request.route is not None:
            return await call_next(request)
        t0 = time.perf_counter()
        verdict = await self.classifier.classify(request, call_next)
        tier = tier_for(self.tiers, self.thresholds, verdict)
        classify_ms = (time.perf_counter() - t0) * 1000.0
        response = await call_next(request.routed(tier.backend))
        strongest = self.tiers[-1]

        def account(final: Response) -> Response:
            cost = tier.price.cost(final.usage, final.latency_ms)
            strong = strongest.price.cost(final.usage, final.latency_ms)
            return final.replace(cost=cost).with_decision(
                self.decision(
                    "routed",
                    tier=tier.name,
                    backend=tier.backend,
                    score=round(verdict.score, 4),
                    reason=verdict.reason,
                    classifier=getattr(self.classifier, "name", "custom"),
                    classify_ms=round(classify_ms, 2),
                    cost=cost,
                    strongest_cost=strong,
                    strongest_cost_estimated=tier is not strongest,
                    saved=strong - cost,
                )
            )

        return await when_final(response, account)  # cost is known when the stream ends
