"""JSON for the gateway: orjson when installed (about 5x faster on the per-token path),
``json`` otherwise, with the same results either way."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "loads"]

try:  # orjson is ~5x faster on the per-token path; json is the fallback.
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def loads(data: bytes) -> Any:
        """Parse a request body; ``ValueError`` when it is not JSON. What orjson refuses
        and ``json`` accepts (NaN, huge integers) still parses, as it did with ``json``."""
        try:
            return orjson.loads(data)
        except ValueError:
            return json.loads(data)

except ImportError:  # pragma: no cover - depends on the environment

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(data: bytes) -> Any:
        return json.loads(data)
