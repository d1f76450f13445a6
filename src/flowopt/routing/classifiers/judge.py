"""The LLM judge: ask the cheap model itself whether a request is easy or hard.

The answer is constrained with vLLM structured outputs
(``extra_body={"structured_outputs": {"choice": ["easy", "hard"]}}``), so it is always one
of the two words, and read with logprobs, so the score is P("hard") rather than a coin
flip. It costs one extra (one-token) call per request on the cheap tier, which is why it
pays only when the strong tier is much dearer; measured in docs/triage.md.
"""

from __future__ import annotations

import math
from typing import Any

from flowopt.errors import BackendError
from flowopt.middleware.base import traced_backend
from flowopt.routing.classifiers.base import Verdict
from flowopt.types import Message, Params, Request

__all__ = ["JudgeClassifier"]

_SYSTEM = (
    "You grade how hard a request is for a small language model. Answer 'easy' if a small "
    "model can answer it correctly, 'hard' if it needs a large model (multi-step reasoning, "
    "expert knowledge, long or precise output)."
)


class JudgeClassifier:
    """``judge: {backend: default}`` — the backend (tier) that judges."""

    name = "judge"

    def __init__(
        self, backend: str = "default", *, max_chars: int = 2000, on_error_score: float = 1.0
    ) -> None:
        self.backend_name = backend
        self.max_chars = max_chars
        self.on_error_score = on_error_score
        self._call: Any = None

    def bind(self, backends: Any, *, tracing: Any = None) -> None:
        from flowopt.errors import ConfigError

        if self.backend_name not in backends:
            raise ConfigError(
                f"judge backend {self.backend_name!r} is not a pipeline backend",
                hint=f"use one of {sorted(backends)}",
            )
        self._call = traced_backend(
            backends[self.backend_name], name=self.backend_name, tracing=tracing
        )

    def build(self, request: Request) -> Request:
        text = request.last_user_text[: self.max_chars]
        return choice_request(
            request,
            (
                Message("system", _SYSTEM),
                Message("user", f"Request:\n{text}\n\nIs this request easy or hard?"),
            ),
            choices=("easy", "hard"),
            max_tokens=2,
            purpose="triage-judge",
        )

    @staticmethod
    def p_hard(text: str, logprobs: Any) -> float:
        """P("hard") from the first token's alternatives, else from the chosen word."""
        if logprobs:
            first = logprobs[0]
            probs = {"easy": 0.0, "hard": 0.0}
            for tok, lp in first.top or ((first.token, first.logprob),):
                t = tok.strip().lower()
                for word in probs:
                    if t and word.startswith(t):
                        probs[word] += math.exp(lp)
            total = probs["easy"] + probs["hard"]
            if total > 0:
                return probs["hard"] / total
        return 1.0 if text.strip().lower().startswith("hard") else 0.0

    async def classify(self, request: Request) -> Verdict:
        if self._call is None:
            return Verdict(self.on_error_score, "judge not bound to a backend")
        try:
            resp = await self._call(self.build(request))
        except BackendError as exc:
            return Verdict(self.on_error_score, f"judge failed ({exc.code}); assumed hard")
        score = self.p_hard(resp.text, resp.logprobs)
        return Verdict(score, f"judge said {resp.text.strip()!r}, P(hard)={score:.2f}")


def choice_request(
    parent: Request,
    messages: tuple[Message, ...],
    *,
    choices: tuple[str, ...],
    max_tokens: int,
    purpose: str,
) -> Request:
    """A greedy side call constrained to one of ``choices`` (vLLM structured outputs), with
    the first token's alternatives so the answer's probability can be read. It inherits the
    parent's tenant (limits) and deadline, and says what it is for in its metadata."""
    return Request(
        messages=messages,
        params=Params(
            temperature=0.0,
            max_tokens=max_tokens,
            logprobs=True,
            top_logprobs=5,
            extra={"structured_outputs": {"choice": list(choices)}},
        ),
        tenant=parent.tenant,
        deadline=parent.deadline,
        metadata={"flowopt.purpose": purpose},
    )
