"""Text in, redacted text and counts out: the part of the plugin that knows nothing about
flowopt's request types, so it can be tested (and reused, e.g. on log lines) on its own.

Why one pass over the original text instead of one ``re.sub`` per kind: sequential
substitution lets a later pattern match inside an earlier placeholder or across the seam
it left behind, and makes the result depend on the order of ``kinds``. Here every enabled
detector runs on the *original* text, overlaps are resolved by priority (custom patterns,
then e-mail, phone, card, IBAN), and the text is rebuilt once.
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from flowopt.errors import ConfigError

from flowopt_redact.patterns import BUILTIN, Detector

__all__ = ["DEFAULT_KINDS", "DEFAULT_PLACEHOLDER", "Redaction", "Redactor"]

DEFAULT_KINDS: tuple[str, ...] = ("email", "phone")
"""What is redacted when no kinds are given. Cards and IBANs are opt-in: their checksums
keep false positives rare, but a pipeline that handles order or tracking numbers should
choose them knowingly."""

DEFAULT_PLACEHOLDER = "[{KIND}]"
"""``{kind}`` is the kind's name (``email``), ``{KIND}`` the same in upper case."""

_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# Decision detail keys become span attributes flowopt.redact.<key>; these are taken.
_RESERVED = frozenset({"action", "total", "middleware"})


@dataclass(frozen=True, slots=True)
class Redaction:
    """The result of redacting one text: the new ``text`` and how many of each kind were
    replaced (kinds with no match are absent)."""

    text: str
    counts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Redactor:
    """Replaces personal data in text with placeholders.

    ``kinds``: built-in kinds to detect (``email``, ``phone``, ``card``, ``iban``, or
    ``all``). ``placeholder``: a format string with ``{kind}`` / ``{KIND}``.
    ``patterns``: extra kinds, ``{name: regex}``; they are always enabled and win over
    built-ins where they overlap. Every mistake raises :class:`ConfigError` here, at build
    time, never on a request.
    """

    __slots__ = ("_detectors", "_placeholders", "kinds")

    def __init__(
        self,
        kinds: Iterable[str] | str | None = None,
        *,
        placeholder: str = DEFAULT_PLACEHOLDER,
        patterns: Mapping[str, str] | None = None,
    ) -> None:
        builtin = _builtin_kinds(kinds)
        custom = _compile_custom(patterns or {})
        self._detectors: tuple[Detector, ...] = (*custom, *builtin)
        if not self._detectors:
            raise ConfigError(
                "redact has nothing to detect: no kinds and no patterns",
                hint=f"enable kinds from {sorted(BUILTIN)}, or add patterns: {{name: regex}}",
            )
        self.kinds: tuple[str, ...] = tuple(d.kind for d in self._detectors)
        self._placeholders = {k: _render_placeholder(placeholder, k) for k in self.kinds}

    def redact(self, text: str) -> Redaction:
        """Redact one text. Returns the same string object when nothing matched."""
        found: list[tuple[int, int, str]] = []
        for det in self._detectors:
            if det.kind == "email" and "@" not in text:
                continue  # the cheapest test of all; most prompts have no "@"
            for m in det.regex.finditer(text):
                start, end = m.span()
                if start == end or not det.accepts(m.group()):
                    continue
                if _overlaps(found, start, end):
                    continue  # a higher-priority kind already owns these characters
                bisect.insort(found, (start, end, det.kind))
        if not found:
            return Redaction(text)
        parts: list[str] = []
        counts: dict[str, int] = {}
        pos = 0
        for start, end, kind in found:
            parts.append(text[pos:start])
            parts.append(self._placeholders[kind])
            counts[kind] = counts.get(kind, 0) + 1
            pos = end
        parts.append(text[pos:])
        return Redaction("".join(parts), MappingProxyType(counts))


def _overlaps(found: list[tuple[int, int, str]], start: int, end: int) -> bool:
    """Whether [start, end) intersects a span in ``found`` (sorted, non-overlapping):
    only the neighbours on either side of the insertion point can."""
    i = bisect.bisect_left(found, (start, end, ""))
    if i < len(found) and found[i][0] < end:
        return True
    return i > 0 and found[i - 1][1] > start


def _builtin_kinds(kinds: Iterable[str] | str | None) -> list[Detector]:
    if kinds is None:
        names: list[str] = list(DEFAULT_KINDS)
    elif isinstance(kinds, str):
        names = list(BUILTIN) if kinds == "all" else [kinds]
    else:
        names = [str(k) for k in kinds]
        if "all" in names:
            names = list(BUILTIN)
    for n in names:
        if n not in BUILTIN:
            close = difflib.get_close_matches(n, list(BUILTIN), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"redact: unknown kind {n!r}",
                hint=f"{hint}built-in kinds are {', '.join(BUILTIN)} (or 'all'); "
                "add your own with patterns: {name: regex}",
            )
    # Built-in priority order, whatever order the user listed them in.
    return [BUILTIN[k] for k in BUILTIN if k in names]


def _compile_custom(patterns: Mapping[str, str]) -> list[Detector]:
    if not isinstance(patterns, Mapping):
        raise ConfigError(
            f"redact: patterns must be a mapping of name -> regex, got {type(patterns).__name__}",
            hint="write patterns: {employee_id: 'EMP-\\d{6}'}",
        )
    out: list[Detector] = []
    for name, source in patterns.items():
        if not isinstance(name, str) or not _KIND_NAME.match(name) or name in _RESERVED:
            raise ConfigError(
                f"redact: pattern name {name!r} is not usable",
                hint="use lower-case letters, digits and '_' (it becomes a span attribute); "
                f"not one of {sorted(_RESERVED)}",
            )
        if name in BUILTIN:
            raise ConfigError(
                f"redact: pattern name {name!r} is a built-in kind",
                hint=f"give your pattern another name, e.g. '{name}_custom'",
            )
        if not isinstance(source, str):
            raise ConfigError(
                f"redact: pattern {name!r} must be a regex string, got {type(source).__name__}",
                hint="quote the regex in YAML",
            )
        try:
            regex = re.compile(source)
        except re.error as exc:
            raise ConfigError(
                f"redact: pattern {name!r} is not a valid regex: {exc}",
                hint="patterns use Python's re syntax; in YAML, single-quote them",
            ) from None
        if regex.search("") is not None:
            raise ConfigError(
                f"redact: pattern {name!r} ({source!r}) matches the empty string",
                hint="make it require at least one character (use + instead of *)",
            )
        out.append(Detector(name, regex))
    return out


def _render_placeholder(template: str, kind: str) -> str:
    try:
        return template.format(kind=kind, KIND=kind.upper())
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"redact: placeholder {template!r} cannot be formatted ({exc!r})",
            hint="use the fields {kind} or {KIND}, and double literal braces: {{ }}",
        ) from None
