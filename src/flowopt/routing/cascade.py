"""Cascade: answer with the cheapest tier first, escalate when it is not confident.

FrugalGPT-style: call tier 0 with logprobs on; accept its answer when its confidence
(:mod:`flowopt.routing.confidence`, and optionally a verifier's P("yes")) clears the
tier's threshold; otherwise call the next tier, up to the strongest, whose answer is final.
A tier that fails (after the resilience layers below) also escalates. Every tier tried is
recorded (tier, confidence, accepted or why not); ``Response.cost`` is the sum of every
call made, next to what always-strongest would have cost.

Streaming — the user chooses, with a cost in time to first token (TTFT):

- ``stream: buffer`` (default): earlier tiers are buffered until accepted. An accepted
  cheap answer is replayed as a stream (TTFT = the cheap tier's *full* latency); an
  escalated request streams live from the strongest tier (TTFT = cheap full latency +
  strong TTFT). Savings as for non-streamed requests.
- ``stream: final``: a streamed request skips the cascade and streams live from one tier
  chosen up front (``stream_tier``, default the strongest; or the route set by triage):
  TTFT of that tier alone, no confidence check, no savings from the cascade.

A pinned request (a step declared on one backend) is not cascaded: it goes to its own
backend and the decision says ``pinned``. A request for several choices (OpenAI's ``n`` >
1) is not cascaded either: confidence judges one answer, and accepting a cheap tier's
choices on the first one's score would pass unjudged answers, so all ``n`` come from the
strongest tier (decision ``final`` with ``reason: "n"``, streamed live). The verifier's
yes/no call is a side request (``purpose="cascade-verifier"``) sent through the layers
below the cascade, so it is traced, limited and retried like any hop.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from flowopt.errors import BackendError, ConfigError, InvalidRequestError, RejectedError
from flowopt.middleware.base import CallNext, MiddlewareBase, PipelineContext
from flowopt.middleware.options import MiddlewareOptions, make_options
from flowopt.routing.classifiers.judge import JudgeClassifier, choice_request
from flowopt.routing.confidence import Method, confidence
from flowopt.routing.pricing import Tier, Tiers
from flowopt.stream import replay, when_final
from flowopt.types import Message, Request, Response

__all__ = ["Cascade", "CascadeOptions", "tool_call_problem"]

_Unit = Annotated[float, Field(ge=0, le=1)]


class CascadeOptions(MiddlewareOptions):
    """Options of ``cascade``."""

    tiers: Tiers
    """Two or more tiers, cheapest first: ``[{name, backend, price}]``."""
    threshold: _Unit = 0.5
    """Confidence a non-final tier's answer needs to be accepted."""
    thresholds: tuple[_Unit, ...] | None = None
    """One threshold per non-final tier, instead of ``threshold``."""
    confidence: Method = "mean"
    """How token logprobs become one confidence: ``mean``, ``min`` or ``first``."""
    verifier: str | None = None
    """A backend asked yes/no on the cheap answer; the acceptance score is then the mean
    of the logprob confidence and P(yes)."""
    stream: Literal["buffer", "final"] = "buffer"
    """Streamed requests: ``buffer`` cascades them (time to first token = the cheap
    tier's full latency); ``final`` streams live from one tier, without the cascade."""
    stream_tier: str | None = None
    """The tier ``stream: final`` uses (default: the strongest)."""

    @model_validator(mode="after")
    def _per_tier(self) -> CascadeOptions:
        got = self.per_tier()
        if len(got) != len(self.tiers) - 1:
            raise ValueError(
                f"cascade needs {len(self.tiers) - 1} threshold(s) in [0, 1], got {got}"
            )
        return self

    def per_tier(self) -> list[float]:
        if self.thresholds is not None:
            return list(self.thresholds)
        return [self.threshold] * (len(self.tiers) - 1)


_VERIFY = "Question:\n{q}\n\nProposed answer:\n{a}\n\nIs the proposed answer correct and complete?"


class Cascade(MiddlewareBase):
    """Options: :class:`CascadeOptions` (``tiers``, ``threshold`` or ``thresholds``,
    ``confidence``, ``verifier``, ``stream``, ``stream_tier``)."""

    name: ClassVar[str] = "cascade"
    options_model: ClassVar[type[CascadeOptions]] = CascadeOptions

    def __init__(self, options: CascadeOptions | None = None, /, **kwargs: Any) -> None:
        self.options = opts = make_options(CascadeOptions, options, kwargs, name=self.name)
        self.tiers = [t.to_tier() for t in opts.tiers]
        self.thresholds = opts.per_tier()
        self.method: Method = opts.confidence
        self.verifier_name = opts.verifier
        self.stream_mode = opts.stream
        self.stream_tier = opts.stream_tier or self.tiers[-1].name

    async def setup(self, ctx: PipelineContext) -> None:
        names = [t.backend for t in self.tiers] + (
            [self.verifier_name] if self.verifier_name else []
        )
        missing = [n for n in names if n not in ctx.backends]
        if missing:
            raise ConfigError(
                f"cascade uses backends {missing} that pipeline {ctx.name!r} lacks",
                hint=f"it has {sorted(ctx.backends)}",
            )

    def _tier(self, name: str) -> Tier:
        for t in self.tiers:
            if name in (t.name, t.backend):
                return t
        raise ConfigError(
            f"cascade has no tier {name!r}", hint=f"tiers: {[t.name for t in self.tiers]}"
        )

    async def _verifier_score(
        self, request: Request, answer: str, call_next: CallNext
    ) -> float | None:
        if self.verifier_name is None:
            return None
        q = request.last_user_text[:2000]
        vreq = choice_request(
            request,
            (Message("user", _VERIFY.format(q=q, a=answer[:2000])),),
            choices=("yes", "no"),
            max_tokens=1,
            purpose="cascade-verifier",
            backend=self.verifier_name,
        )
        try:
            resp = await (await call_next(vreq)).complete()
        except (BackendError, RejectedError):
            return None
        return 1.0 - JudgeClassifier.p_hard(
            "hard" if resp.text.strip().lower().startswith("no") else "easy",
            _remap(resp.logprobs),
        )

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        if request.pinned:
            response = await call_next(request)
            return response.with_decision(self.decision("pinned", backend=request.route))
        if request.params.n > 1:
            tier = self.tiers[-1]
            response = await call_next(request.routed(tier.backend))
            why: dict[str, Any] = {"tier": tier.name, "reason": "n", "n": request.params.n}
            return await self._when_final_account(response, tier, [why])
        if request.stream and self.stream_mode == "final":
            tier = self._tier(request.route or self.stream_tier)
            response = await call_next(request.routed(tier.backend))
            mode: list[dict[str, Any]] = [{"tier": tier.name, "mode": "final"}]
            return await self._when_final_account(response, tier, mode)
        started = time.perf_counter()
        start = 0
        routed = request.route
        if routed is not None:  # triage above chose a starting tier
            start = next((i for i, t in enumerate(self.tiers) if routed in (t.name, t.backend)), 0)
        trail: list[dict[str, Any]] = []
        spent = 0.0
        last_exc: BaseException | None = None
        for i in range(start, len(self.tiers)):
            tier = self.tiers[i]
            final_tier = i == len(self.tiers) - 1
            if final_tier:
                attempt = request.routed(tier.backend)
                response = await self._final(attempt, call_next, tier, trail, spent, last_exc)
                return response
            attempt = request.replace(stream=False).routed(tier.backend)
            if not request.params.logprobs:
                attempt = attempt.with_params(logprobs=True, top_logprobs=None)
            try:
                resp = await call_next(attempt)
                resp = await resp.complete()
            except (BackendError, RejectedError) as exc:
                trail.append({"tier": tier.name, "accepted": False, "error": exc.code})
                last_exc = exc
                continue
            cost = tier.price.cost(resp.usage, resp.latency_ms)
            spent += cost
            conf = confidence(resp.logprobs, self.method)
            # A tool call is judged by its tokens' confidence and by being callable (a
            # declared tool, JSON arguments); the verifier's question is about text answers.
            bad_call = tool_call_problem(request, resp)
            vscore = (
                await self._verifier_score(request, resp.text, call_next)
                if conf is not None and not resp.tool_calls
                else None
            )
            score = conf if vscore is None or conf is None else (conf + vscore) / 2
            accepted = (
                score is not None
                and score >= self.thresholds[i]
                and resp.finish_reason != "aborted"
                and bad_call is None
            )
            entry: dict[str, Any] = {
                "tier": tier.name,
                "confidence": None if conf is None else round(conf, 4),
                "accepted": accepted,
                "cost": cost,
            }
            if resp.tool_calls:
                entry["tool_calls"] = len(resp.tool_calls)
            if bad_call is not None:
                entry["rejected"] = bad_call
            if vscore is not None:
                entry["verifier"] = round(vscore, 4)
            trail.append(entry)
            if accepted:
                if not request.params.logprobs:
                    resp = resp.replace(logprobs=None)
                out = self._account(resp, tier, trail, spent)
                # A buffered answer replayed as a stream: its latency and TTFT count from
                # the request's start (the buffered calls), not from the replay.
                return replay(out, started_at=started) if request.stream else out
        raise AssertionError("unreachable: the last tier is final")  # pragma: no cover

    async def _final(
        self,
        attempt: Request,
        call_next: CallNext,
        tier: Tier,
        trail: list[dict[str, Any]],
        spent: float,
        last_exc: BaseException | None,
    ) -> Response:
        try:
            response = await call_next(attempt)
        except BaseException as exc:
            if last_exc is not None:
                exc.add_note(f"flowopt.cascade: earlier tiers failed too: {trail}")
            raise
        trail.append({"tier": tier.name, "accepted": True, "final": True})
        return await self._when_final_account(response, tier, trail, spent)

    def _account(
        self, final: Response, tier: Tier, trail: list[dict[str, Any]], spent: float
    ) -> Response:
        strongest = self.tiers[-1]
        strong_cost = strongest.price.cost(final.usage, final.latency_ms)
        return final.replace(cost=spent).with_decision(
            self.decision(
                "accepted" if tier is not strongest else "escalated" if len(trail) > 1 else "final",
                tier=tier.name,
                backend=tier.backend,
                trail=trail,
                cost=spent,
                strongest_cost=strong_cost,
                strongest_cost_estimated=tier is not strongest,
                saved=strong_cost - spent,
            )
        )

    async def _when_final_account(
        self, response: Response, tier: Tier, trail: list[dict[str, Any]], spent: float = 0.0
    ) -> Response:
        """Account for the final tier's answer once it is complete (now or at stream end)."""

        def account(final: Response) -> Response:
            return self._account(
                final, tier, trail, spent + tier.price.cost(final.usage, final.latency_ms)
            )

        return await when_final(response, account)


def tool_call_problem(request: Request, response: Response) -> str | None:
    """Why a tier's tool calls cannot be run (escalate), or None: a function the request
    did not declare, or arguments that are not a JSON object."""
    declared = {t.get("function", {}).get("name") for t in request.tools}
    for call in response.tool_calls:
        if declared and call.name not in declared:
            return f"undeclared tool {call.name!r}"
        try:
            args = call.parsed_arguments()
        except InvalidRequestError:
            return f"arguments of {call.name!r} are not JSON"
        if not isinstance(args, dict):
            return f"arguments of {call.name!r} are not an object"
    return None


def _remap(logprobs: Any) -> Any:
    """Map yes/no alternatives onto the judge's easy/hard reader (yes = easy)."""
    if not logprobs:
        return logprobs
    from flowopt.types import TokenLogprob

    first = logprobs[0]

    def m(tok: str) -> str:
        t = tok.strip().lower()
        return "easy" if t and "yes".startswith(t) else "hard" if t and "no".startswith(t) else tok

    top = tuple((m(t), lp) for t, lp in first.top)
    return (TokenLogprob(m(first.token), first.logprob, top), *logprobs[1:])
