"""The ``redact`` middleware: personal data never leaves the process in a prompt.

Every message (system, user, assistant and tool turns alike: earlier turns repeat what the
user said) and every completion prompt is redacted *before* ``call_next``, so the backend,
and every middleware inside this one, only ever sees placeholders. Put it first (outermost)
in the list for that reason: a cache, a memory store or a request logger listed before it
would see the original text.

The response is not touched: the model never saw the values, so it cannot repeat them.
Streaming needs nothing special either: only the request changes, so a streamed response
is passed back as it came, and the decision rides on the stream's final response.

YAML::

    middleware:
      - redact                         # e-mail and phone, placeholders [EMAIL] / [PHONE]
      - redact: [email, phone, card]   # short form: the kinds
      - redact:
          kinds: [email]
          placeholder: "<{kind}>"
          patterns: {employee_id: 'EMP-\\d{6}'}
"""

from __future__ import annotations

from typing import Any, ClassVar

from flowopt.middleware.base import CallNext, MiddlewareBase
from flowopt.middleware.options import MiddlewareOptions, make_options
from flowopt.types import Decision, Message, Request, Response

from flowopt_redact.redactor import DEFAULT_PLACEHOLDER, Redactor

__all__ = ["Redact", "RedactOptions"]


class RedactOptions(MiddlewareOptions):
    """Options of ``redact`` (short form: ``redact: [email, phone]`` sets ``kinds``).
    Types are checked when a spec is validated; the kind names and regexes when the
    middleware is built."""

    kinds: list[str] | str | None = None
    """Built-in kinds to detect (``email``, ``phone``, ``card``, ``iban``, or ``all``);
    default: e-mail and phone."""
    placeholder: str = DEFAULT_PLACEHOLDER
    """What replaces a match; ``{KIND}`` / ``{kind}`` become the kind's name."""
    patterns: dict[str, str] | None = None
    """Extra kinds, ``{name: regex}``; always enabled, and they win over built-ins."""


class Redact(MiddlewareBase):
    """Replace e-mail addresses, phone numbers and (opt-in) card numbers, IBANs or custom
    patterns in the request with placeholders.

    Records ``Decision("redact", "redacted" | "clean", {"total": n, <kind>: count, ...})``
    with a count for every enabled kind, which flowopt puts on the middleware's span as
    ``flowopt.redact.action``, ``flowopt.redact.total``, ``flowopt.redact.<kind>``. Counts
    only: the redacted values are never recorded anywhere.
    """

    name: ClassVar[str] = "redact"
    positional: ClassVar[str | None] = "kinds"
    options_model: ClassVar[type[RedactOptions]] = RedactOptions

    def __init__(self, options: RedactOptions | Any = None, /, **kwargs: Any) -> None:
        self.options = opts = make_options(
            RedactOptions, options, kwargs, name=self.name, positional=self.positional
        )
        self._redactor = Redactor(opts.kinds, placeholder=opts.placeholder, patterns=opts.patterns)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Enabled kinds, custom patterns first (that is also their priority)."""
        return self._redactor.kinds

    def redact_request(self, request: Request) -> tuple[Request, Decision]:
        """The request as the backend should see it, and the decision that describes it.

        Returns the *same* request object when nothing matched, so a clean request keeps
        its identity (and every cache key derived from it). Otherwise a new frozen request
        built with :meth:`Request.replace`; the caller's request is never changed.
        """
        counts: dict[str, int] = dict.fromkeys(self.kinds, 0)
        changes: dict[str, object] = {}
        if request.prompt is not None:
            result = self._redactor.redact(request.prompt)
            if result.total:
                changes["prompt"] = result.text
                for kind, n in result.counts.items():
                    counts[kind] += n
        else:
            messages: list[Message] = []
            changed = False
            for msg in request.messages:
                result = self._redactor.redact(msg.content)
                if result.total:
                    changed = True
                    messages.append(Message(msg.role, result.text, msg.name))
                    for kind, n in result.counts.items():
                        counts[kind] += n
                else:
                    messages.append(msg)
            if changed:
                changes["messages"] = tuple(messages)
        total = sum(counts.values())
        decision = self.decision("redacted" if total else "clean", total=total, **counts)
        return (request.replace(**changes) if changes else request), decision

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        redacted, decision = self.redact_request(request)
        response = await call_next(redacted)
        # On a streaming handle this also adds the decision to the final response.
        return response.with_decision(decision)
