"""``flowopt.pipeline(...)``: declare a pipeline in Python.

It builds the same validated :class:`~flowopt.spec.PipelineSpec` that a YAML file does,
so Python- and YAML-declared pipelines compare equal and round-trip through ``to_yaml()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flowopt.middleware.base import Use
from flowopt.pipeline import Pipeline
from flowopt.spec import parse_spec

__all__ = ["pipeline"]


def pipeline(
    name: str = "pipeline",
    *,
    backend: Any,
    steps: Sequence[Any],
    middleware: Sequence[Any] = (),
    backends: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    edges: Sequence[tuple[str, str]] | None = None,
    routes: Sequence[Mapping[str, Any]] = (),
    speculate: Sequence[Mapping[str, Any]] = (),
    tracing: Mapping[str, Any] | None = None,
    description: str | None = None,
    checkpointer: Any = None,
) -> Pipeline:
    """Declare a pipeline in Python. Produces the same :class:`PipelineSpec` as YAML.

    ``backend`` is ``{"vllm": {"base_url": ..., "model": ...}}``, a registered name, or a
    backend object. ``steps`` are dicts (``{"name", "prompt" | "function", "output",
    "system", "params", "backend"}``) or :class:`StepSpec`. ``middleware`` entries are
    names, ``{name: {options}}``, :class:`Use` records or middleware objects, outermost
    first. ``speculate`` lists speculated edges (:class:`~flowopt.SpeculateSpec`,
    docs/speculation.md).
    """
    data: dict[str, Any] = {
        "name": name,
        "backend": backend if isinstance(backend, str | Mapping | Use) else Use(backend),
        "steps": list(steps),
        "middleware": [m if isinstance(m, str | Mapping | Use) else Use(m) for m in middleware],
        "backends": {
            k: (v if isinstance(v, str | Mapping | Use) else Use(v))
            for k, v in (backends or {}).items()
        },
        "defaults": dict(defaults or {}),
        "routes": list(routes),
    }
    if speculate:
        data["speculate"] = list(speculate)
    if edges is not None:
        data["edges"] = [tuple(e) for e in edges]
    if tracing is not None:
        data["tracing"] = dict(tracing)
    if description is not None:
        data["description"] = description
    return Pipeline(parse_spec(data, source=f"pipeline({name!r})"), checkpointer=checkpointer)
