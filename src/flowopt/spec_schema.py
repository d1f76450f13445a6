"""The JSON Schema of pipeline specs (``flowopt schema``), for editors.

Apart from :mod:`flowopt.spec` because it is the one part that reads the registry for
every installed middleware and renders their options models; validating a spec does not
need it.
"""

from __future__ import annotations

import inspect
from typing import Any

from pydantic.json_schema import models_json_schema

from flowopt import registry
from flowopt.middleware.options import options_model_of
from flowopt.spec import PipelineSpec, registered_class

__all__ = ["spec_json_schema"]


def spec_json_schema() -> dict[str, Any]:
    """:class:`PipelineSpec`'s JSON Schema, with the options of every middleware
    registered now (built-ins and installed plugins): each ``middleware`` item is a bare
    name or ``{name: options}``, where a middleware without an options model takes any
    options."""
    schema = PipelineSpec.model_json_schema()
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    defs["Use"] = {  # backends: a registered name, or {name: {options}}
        "anyOf": [
            {"type": "string"},
            {"type": "object", "minProperties": 1, "maxProperties": 1},
        ],
        "description": "A registered name, or {name: {options}}.",
    }
    names = registry.middleware.names()
    models = {n: options_model_of(registered_class(n)) for n in names}
    typed = {n: m for n, m in models.items() if m is not None}
    refs, extra = models_json_schema(
        [(m, "validation") for m in dict.fromkeys(typed.values())],
        ref_template="#/$defs/{model}",
    )
    defs.update(extra.get("$defs", {}))
    shapes: list[dict[str, Any]] = [
        {"type": "string", "enum": names, "description": "A middleware with no options."}
    ]
    for n in names:
        model = typed.get(n)
        opts: dict[str, Any] = {"description": "Options (not described by the middleware)."}
        if model is not None:
            forms = [refs[(model, "validation")], {"type": "null"}]
            positional = getattr(registered_class(n), "positional", None)
            field_schema = defs[model.__name__].get("properties", {}).get(positional)
            if field_schema is not None:  # the short form {name: value}
                forms.insert(1, {k: v for k, v in field_schema.items() if k != "default"})
            opts = {"anyOf": forms, "description": inspect.cleandoc(model.__doc__ or "")}
        shapes.append(
            {
                "type": "object",
                "properties": {n: opts},
                "required": [n],
                "additionalProperties": False,
            }
        )
    schema["properties"]["middleware"]["items"] = {"anyOf": shapes}
    return schema
