"""Check spec options against a constructor's annotations before calling it.

Why: a backend, store or older middleware without an ``options_model`` took its YAML
options straight into ``__init__``, so ``base_url: 8000`` failed deep inside as
``AttributeError: 'int' object has no attribute 'strip'``. Validating each plain (YAML)
value against the parameter's annotation first turns that into a typed error naming the
option. Python objects, and annotations pydantic cannot check, are left to the
constructor, as before.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from flowopt.middleware.options import _plain

__all__ = ["option_type_error"]

_LAX = ConfigDict(arbitrary_types_allowed=True)


def _hints(cls: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # forward references to optional imports: nothing to check against
        return {}


def option_type_error(cls: Any, options: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(option, problem)`` for the first plain option whose type is wrong, else None."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None
    hints = _hints(cls)
    for name, value in options.items():
        if name not in params or name not in hints or not _plain(value):
            continue
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(hints[name], config=_LAX)
        except Exception:  # an annotation pydantic cannot build a validator for
            continue
        try:
            adapter.validate_python(value, strict=False)
        except ValidationError as exc:
            first = exc.errors()[0]
            return name, f"{first['msg']} (got {type(value).__name__} {str(value)[:60]!r})"
    return None
