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
from typing import Any, ClassVar

from flowopt.errors import ConfigError
from flowopt.middleware.base import CallNext, MiddlewareBase, PipelineContext
from flowopt.routing.classifiers.base import Classifier, Verdict
from flowopt.routing.pricing import Tier, parse_tiers
from flowopt.stream import when_final
from flowopt.types import Request, Response

__all__ = ["Triage", "make_classifier", "tier_for"]


def make_classifier(value: Any) -> Classifier:
    """``{rules: {...}}``, ``{embedding: {path: router.npz}}``, ``{judge: {...}}``, a name,
    or an object with ``classify``."""
    if hasattr(value, "classify"):
        return value  # type: ignore[no-any-return]
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
    """Options: ``tiers`` (cheapest first: ``[{name, backend, price}]``), ``classifier``,
    ``threshold`` (two tiers) or ``thresholds`` (N tiers), ``respect_route`` (true: a
    request already routed by an outer layer is left alone)."""

    name: ClassVar[str] = "triage"

    def __init__(
        self,
        *,
        tiers: Any,
        classifier: Any = "rules",
        threshold: float | None = None,
        thresholds: Sequence[float] | None = None,
        respect_route: bool = True,
    ) -> None:
        self.tiers = parse_tiers(tiers)
        if thresholds is None:
            thresholds = [0.5 if threshold is None else threshold]
        if len(thresholds) != len(self.tiers) - 1 or list(thresholds) != sorted(thresholds):
            raise ConfigError(
                f"triage needs {len(self.tiers) - 1} ascending threshold(s), "
                f"got {list(thresholds)}",
                hint="one threshold per boundary between tiers, cheapest first",
            )
        self.thresholds = list(thresholds)
        self.classifier = make_classifier(classifier)
        self.respect_route = respect_route

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
