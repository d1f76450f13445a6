"""Prompt layout: does a step's template keep its static text in front?

vLLM's prefix cache (on by default) reuses the KV cache of the longest prefix a new prompt
shares with earlier ones, token for token. A step renders ``system`` then ``prompt``; the
first field that varies per request (``{input}``, another step's output) ends the prefix
every request shares. Static text *after* that field — instructions, few-shot examples, a
long policy — is prefilled again on every request. Moving it in front of the first field
makes it a cache hit (measured in docs/serving.md: time to first token ~12x lower with a
1,500-token shared system prompt on the local server).

``flowopt validate`` prints these warnings; they never fail validation, because some
layouts are deliberate (a short suffix like "Answer:" costs nothing worth moving).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from flowopt.spec import PipelineSpec, StepSpec

__all__ = ["LayoutWarning", "layout_warnings", "step_layout"]

MIN_STATIC_CHARS = 200
"""Static text after the first varying field worth a warning (~50 tokens): below that the
re-prefill costs less than a millisecond or two on a GPU and the warning would be noise."""


@dataclass(frozen=True, slots=True)
class LayoutWarning:
    """One step whose template puts request-specific text before ``static_chars`` of
    static text, starting at ``field`` (in its ``where``: ``system`` or ``prompt``)."""

    step: str
    field: str
    where: str
    static_chars: int

    def __str__(self) -> str:
        return (
            f"step {self.step!r}: the field {{{self.field}}} in its {self.where} comes before "
            f"{self.static_chars} characters of static text, which the server's prefix cache "
            "then cannot reuse; move instructions and examples in front of the first field "
            "(system prompt first, request-specific text last)"
        )


def step_layout(
    step: StepSpec, *, min_static_chars: int = MIN_STATIC_CHARS
) -> LayoutWarning | None:
    """The layout warning for one LLM step, or None when its layout is prefix-friendly."""
    first: tuple[str, str] | None = None  # (field, where) of the first varying field
    after = 0  # static characters after it
    for where, tpl in (("system", step.system), ("prompt", step.prompt)):
        if not tpl:
            continue
        for literal, fname, _, _ in string.Formatter().parse(tpl):
            if first is not None:
                after += len(literal.strip())
            if fname is not None and first is None:
                first = (fname.split(".")[0].split("[")[0], where)
    if first is None or after < min_static_chars:
        return None
    return LayoutWarning(step.name, first[0], first[1], after)


def layout_warnings(
    spec: PipelineSpec, *, min_static_chars: int = MIN_STATIC_CHARS
) -> list[LayoutWarning]:
    """Layout warnings for every LLM step of ``spec``, in step order."""
    out = []
    for step in spec.steps:
        if step.kind == "llm":
            warning = step_layout(step, min_static_chars=min_static_chars)
            if warning is not None:
                out.append(warning)
    return out
