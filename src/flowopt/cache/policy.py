"""What may be cached: the rules that keep answers out of the cache, each with a reason.

Why a separate module: these rules are the cache's promise to users ("never replay a random,
failed, cut-off, tool-calling or personal answer"), so they live in one readable place and
every skip carries a stable reason string that ends up on the span
(``flowopt.cache.skip_reason``) and in ``flowopt cache stats``.

Personal data is detected by a pluggable :class:`PIIDetector`; the default
:class:`RegexPIIDetector` finds e-mail addresses, phone numbers, payment-card numbers
(Luhn-checked, so order numbers do not trip it) and national ID patterns (US SSN, UK NINO,
IBAN). It errs on the side of *not* caching: a false positive only costs a cache miss.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Protocol, runtime_checkable

from flowopt.types import Request, Response

__all__ = [
    "PIIDetector",
    "RegexPIIDetector",
    "SkipReason",
    "impure_tool_results",
    "request_bypass_reason",
    "response_skip_reason",
]


class SkipReason:
    """Stable reason strings (span attribute values; do not rename)."""

    SAMPLED = "sampled"
    TOOLS = "tools"
    TOOL_CALL = "tool_call"
    ERROR = "error"
    TRUNCATED = "truncated"
    STREAM_ABORTED = "stream_aborted"
    PII = "pii"
    EMPTY = "empty"
    NO_TEXT = "no_text"
    STORE_ERROR = "store_error"
    DISABLED = "disabled"
    CHOICES = "choices"


@runtime_checkable
class PIIDetector(Protocol):
    """Return the kinds of personal data found in ``text`` (empty when none)."""

    def detect(self, text: str) -> list[str]: ...


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w+])(?:\+|\()?\d[\d\s().-]{6,20}\d(?![\w])")
_YEAR = re.compile(r"(?:19|20)\d\d")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
_NINO = re.compile(r"\b[A-CEGHJ-PR-TW-Z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){3,7}(?:\s?[A-Z0-9]{1,3})?\b")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_phone(candidate: str) -> bool:
    """9 to 15 digits in separated groups, not a list of years or a version/decimal."""
    digits = re.sub(r"\D", "", candidate)
    if not 9 <= len(digits) <= 15:
        return False
    groups = re.findall(r"\d+", candidate)
    if len(groups) == 1 and not candidate.startswith("+"):
        return False  # one long number: an id or amount, not written like a phone number
    return not all(len(g) == 4 and _YEAR.fullmatch(g) for g in groups)


class RegexPIIDetector:
    """The default detector. ``extra`` adds named patterns of your own
    (``{"employee_id": r"EMP-\\d{6}"}``)."""

    def __init__(self, extra: dict[str, str] | None = None) -> None:
        self._extra = {k: re.compile(v) for k, v in (extra or {}).items()}

    def detect(self, text: str) -> list[str]:
        found: list[str] = []
        if "@" in text and _EMAIL.search(text):
            found.append("email")
        for m in _CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group(0))
            if 13 <= len(digits) <= 19 and _luhn_ok(digits):
                found.append("card")
                break
        if _SSN.search(text) or _NINO.search(text) or _IBAN.search(text):
            found.append("national_id")
        if not found and any(_is_phone(m.group(0)) for m in _PHONE.finditer(text)):
            found.append("phone")
        for name, pattern in self._extra.items():
            if pattern.search(text):
                found.append(name)
        return found


def impure_tool_results(request: Request, pure_tools: Collection[str]) -> bool:
    """True when a tool message of ``request`` answers a call to a tool not in
    ``pure_tools`` (``"*"`` in it: every tool is pure), or answers no call it can name."""
    if "*" in pure_tools:
        return False
    names = {c.id: c.name for m in request.messages for c in m.tool_calls}
    return any(
        m.role == "tool" and names.get(m.tool_call_id or "") not in pure_tools
        for m in request.messages
    )


def request_bypass_reason(
    request: Request,
    *,
    max_temperature: float,
    tool_results: str = "never",
    pure_tools: Collection[str] = (),
) -> str | None:
    """Why this request must neither be served from nor stored in the cache, or None.

    A sampled request asks for a *random* answer: replaying one would silently turn it
    greedy. A seed makes sampling reproducible, so a seeded request is cacheable. A request
    for several choices (``n`` > 1) is never cached (``choices``).

    A conversation holding tool results is cached only with ``tool_results="pure"`` and
    when every result comes from a tool named in ``pure_tools``: a result fetched from
    the world may differ next time, and the answer built on it with it.
    """
    p = request.params
    if p.n > 1:
        # Several choices are several samples: an entry holds one answer, and serving one
        # would drop the others (a seeded n > 1 request would otherwise be cacheable).
        return SkipReason.CHOICES
    sampled = p.temperature is None or p.temperature > max_temperature
    if sampled and p.seed is None:
        return SkipReason.SAMPLED
    extra = p.extra
    if "tools" in extra or "tool_choice" in extra or "functions" in extra:
        return SkipReason.TOOLS
    if any(m.role == "tool" for m in request.messages) and (
        tool_results != "pure" or impure_tool_results(request, pure_tools)
    ):
        return SkipReason.TOOLS
    if not request.last_user_text.strip():
        return SkipReason.NO_TEXT
    return None


def _has_tool_calls(response: Response) -> bool:
    # the typed field first: some servers finish a tool-calling turn with "stop"
    if response.tool_calls or response.finish_reason in ("tool_calls", "function_call"):
        return True
    md = response.metadata
    return bool(md.get("tool_calls") or md.get("function_call"))


def response_skip_reason(
    request: Request, response: Response, detectors: Iterable[PIIDetector]
) -> tuple[str, str] | None:
    """Why this finished answer must not be stored: ``(reason, detail)`` or None."""
    if _has_tool_calls(response):
        return SkipReason.TOOL_CALL, response.finish_reason or "tool_calls"
    # Personal data first: it is the most important reason to report.
    for detector in detectors:
        kinds = detector.detect(response.text) or detector.detect(request.last_user_text)
        if kinds:
            return SkipReason.PII, ",".join(sorted(set(kinds)))
    if response.truncated or response.finish_reason not in (None, "stop", "eos"):
        return SkipReason.TRUNCATED, str(response.finish_reason)
    if not response.text:
        return SkipReason.EMPTY, ""
    return None
