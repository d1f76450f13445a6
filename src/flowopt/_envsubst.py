"""``${VAR}`` / ``${VAR:-default}`` in spec files: one file serves dev and prod.

Kept apart from :mod:`flowopt.spec` (the spec's shape) because it is plain text
substitution over loaded YAML, before any validation; :func:`flowopt.spec.expand_env`
re-exports it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from flowopt.errors import SpecError

__all__ = ["expand_env"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^${}]*))?\}")


def expand_env(value: Any, *, source: str | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a loaded spec, so one
    file serves dev and prod (``base_url: ${VLLM_URL:-http://127.0.0.1:8000}``)."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise SpecError(
                f"environment variable {name} is not set",
                source=source,
                hint=f"export {name}=..., or write ${{{name}:-default}} in the spec",
            )

        for _ in range(8):  # nested defaults resolve one level per pass
            expanded = _ENV.sub(sub, value)
            if expanded == value:
                break
            value = expanded
        return value
    if isinstance(value, Mapping):
        return {k: expand_env(v, source=source) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, source=source) for v in value]
    return value
