"""API keys -> tenants, compared in constant time.

Why hash first: ``hmac.compare_digest`` is constant-time only for inputs of equal length,
and returning on the first matching key would tell a timing attacker *which* key is close.
So the presented key is hashed once (SHA-256, fixed length) and compared against every
stored digest, always all of them. Keys are never logged or echoed: errors say "invalid
API key", not which one, and the ring's repr shows only tenant names.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from flowopt.gateway.errors import HTTPProblem

__all__ = ["KeyRing"]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """The configured ``tenant -> key`` map. Empty ring: authentication is off."""

    __slots__ = ("_entries",)

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._entries = tuple((_digest(key), tenant) for tenant, key in keys.items())

    def __repr__(self) -> str:
        return f"KeyRing(tenants={[t for _, t in self._entries]})"

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def tenant_for(self, authorization: str | None) -> str | None:
        """The tenant of an ``Authorization: Bearer <key>`` header.

        Returns None when authentication is off; raises a 401 :class:`HTTPProblem` when
        it is on and the header is missing or the key unknown.
        """
        if not self._entries:
            return None
        if not authorization:
            raise HTTPProblem(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise HTTPProblem(
                401, "the Authorization header must be 'Bearer <key>'", code="invalid_api_key"
            )
        candidate = _digest(presented.strip())
        found: str | None = None
        for digest, tenant in self._entries:
            # No early exit: every key is compared whatever matched.
            if hmac.compare_digest(candidate, digest):
                found = tenant
        if found is None:
            raise HTTPProblem(401, "invalid API key", code="invalid_api_key")
        return found
