"""Prompt compression with LLMLingua, only where it is marked and only when it pays.

``Use("compress", ratio=3)`` in a pipeline's middleware; mark what may be compressed with
:func:`mark` (or by role / age through the options). See docs/compression.md.
"""

from __future__ import annotations

from flowopt.compress._select import Selection, select
from flowopt.compress.decide import CostModel, Forecast, PrefillModel, predict
from flowopt.compress.marks import METADATA_KEY, Span, find_spans, mark, question_of
from flowopt.compress.middleware import Compress, PromptTooLongError
from flowopt.compress.options import CompressOptions
from flowopt.compress.scorer import LLMLinguaScorer, Scorer, TokenScore

__all__ = [
    "METADATA_KEY",
    "Compress",
    "CompressOptions",
    "CostModel",
    "Forecast",
    "LLMLinguaScorer",
    "PrefillModel",
    "PromptTooLongError",
    "Scorer",
    "Selection",
    "Span",
    "TokenScore",
    "find_spans",
    "mark",
    "predict",
    "question_of",
    "select",
]
