"""Distillation data from traffic: the strong model's accepted answers as a training set.

- :func:`export` (``flowopt distill export``): cache entries and batch outputs kept with
  consent, filtered, deduplicated, split (:mod:`flowopt.distill.export`);
- :mod:`flowopt.distill.example`: one example, its prompt key and its split side;
- ``examples/distill_recipe.py``: LoRA-tune SmolLM2-135M on such a set (the ``distill``
  extra) and measure it against the teacher.

See docs/distill.md.
"""

from __future__ import annotations

from flowopt.distill.errors import DistillError, NothingToExportError
from flowopt.distill.example import Example, holdout_side, prompt_key
from flowopt.distill.export import ExportReport, export, holdout_path

__all__ = [
    "DistillError",
    "Example",
    "ExportReport",
    "NothingToExportError",
    "export",
    "holdout_path",
    "holdout_side",
    "prompt_key",
]
