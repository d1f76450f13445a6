"""The backend seam: the innermost handler of every middleware stack.

A backend turns a :class:`~flowopt.types.Request` into a :class:`~flowopt.types.Response`
and knows the identity of the model it serves. It is the one pluggable transport (like
httpx's transport): middleware never talks HTTP, it calls ``call_next``.

Plugin backends register under the ``flowopt.backends`` entry-point group as a class
accepting keyword options (those of the spec's ``backend:`` block).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from flowopt._answer import EMPTY
from flowopt.messages import _deep_freeze
from flowopt.types import Request, Response

__all__ = ["Backend", "ModelInfo"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What model a backend serves. ``identity`` changes whenever the weights or the
    serving configuration that changes answers change; caches key on it."""

    id: str
    root: str | None = None
    max_model_len: int | None = None
    owned_by: str | None = None
    entry: Mapping[str, Any] = field(default_factory=lambda: EMPTY, compare=False)
    """The server's own ``/v1/models`` entry for the model, every field as sent
    (``parent``, ``permission``...), read-only: the gateway lists it unchanged."""

    def __post_init__(self) -> None:
        if self.entry and not isinstance(self.entry, MappingProxyType):
            object.__setattr__(self, "entry", _deep_freeze(self.entry))

    @property
    def identity(self) -> str:
        raw = f"{self.id}|{self.root}|{self.max_model_len}"
        return f"{self.id}@{hashlib.blake2b(raw.encode(), digest_size=6).hexdigest()}"


@runtime_checkable
class Backend(Protocol):
    """What a backend must do. ``provider`` names the system for ``gen_ai.provider.name``."""

    @property
    def provider(self) -> str:
        """The system name on spans (``vllm``, ``openai``...); a class attribute will do."""
        ...

    async def generate(self, request: Request) -> Response:
        """Answer one request; a streamed request returns a streaming Response."""
        ...

    async def model_info(self) -> ModelInfo:
        """The served model's identity (cached after the first call)."""
        ...

    def endpoint_for_display(self) -> str:
        """A human-readable endpoint for errors and spans."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
