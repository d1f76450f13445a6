"""The ``gateway:`` section of a spec: how ``flowopt serve`` exposes a pipeline, and the
limits that keep a hostile or careless client from taking the server down.

Kept apart from :mod:`flowopt.spec` (the pipeline's shape) because it is the gateway's
configuration, with one documented setting per resource a client can hold: body size and
time, header size and count and time, idle keep-alive, connections, requests in flight.
Each has a default that no ordinary client reaches and that bounds what one can take
(docs/security.md lists them, and what happens past each).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from flowopt._batch_spec import BatchSettings

__all__ = ["DEFAULT_MAX_BODY_BYTES", "GatewaySpec"]

# 4 MiB: a 128k-token conversation is ~0.5 MB of text (~4 bytes a token), so this holds
# one several times over, even JSON-escaped, yet bounds what a single request can make the
# gateway hold in memory. See docs/gateway.md.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


class GatewaySpec(BaseModel):
    """How ``flowopt serve`` exposes the pipeline over the OpenAI-compatible HTTP API.

    Keys are secrets: they are held as ``SecretStr`` so a spec's repr, a log line or a
    traceback never shows them, and :meth:`PipelineSpec.to_yaml` writes an environment
    reference (``${FLOWOPT_API_KEY_<TENANT>}``) in their place instead of the value.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="tenant -> API key (write ${ENV_VAR}). When set, every request needs "
        "'Authorization: Bearer <key>' and the key decides the tenant.",
    )
    host: str = Field(
        default="127.0.0.1", description="Interface `flowopt serve` binds by default."
    )
    port: int = Field(
        default=8000, ge=0, le=65535, description="Port `flowopt serve` binds by default."
    )
    expose_graph: bool = Field(
        default=True, description="Also serve the multi-step graph as a model (named graph_model)."
    )
    graph_model: str | None = Field(
        default=None,
        description="Model name that runs the whole graph (default: the pipeline name).",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1,
        description="Largest request body accepted, in bytes; a larger one is refused with "
        "413 request_too_large before it is read (`flowopt serve --max-body-bytes`).",
    )

    body_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a client has to send the whole request body once its headers "
        "are in; slower is 408 request_timeout and the connection is closed.",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send the request line and headers after "
        "connecting (or starting a request); slower is 408 and the connection is closed "
        "(slowloris).",
    )
    keep_alive_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds an idle keep-alive connection stays open between requests.",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest request line + headers, in bytes; larger is 431 and the "
        "connection is closed.",
    )
    max_headers: int = Field(
        default=100, ge=8, description="Most header fields in one request; more is 431."
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Most open client connections (per worker); one more is answered 503 "
        "with Retry-After and closed at once, never held.",
    )
    max_in_flight: int = Field(
        default=256,
        ge=1,
        description="Most requests being answered at once (per worker); one more is "
        "503 overloaded with Retry-After.",
    )
    batch: BatchSettings = Field(
        default_factory=BatchSettings,
        description="Batch jobs (POST /v1/batches, `flowopt batch run`): store, "
        "concurrency, priority, off-peak windows (docs/batch.md).",
    )

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        seen: set[str] = set()
        for tenant, key in v.items():
            raw = key.get_secret_value()
            if len(raw) < 8:
                raise ValueError(f"the API key of tenant {tenant!r} is shorter than 8 characters")
            if raw in seen:
                raise ValueError("two tenants share one API key; each tenant needs its own")
            seen.add(raw)
        return v

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(exclude_defaults=True, exclude={"api_keys"})
        if self.api_keys:
            out["api_keys"] = {
                t: "${FLOWOPT_API_KEY_" + re.sub(r"[^A-Za-z0-9]", "_", t).upper() + "}"
                for t in self.api_keys
            }
        return out
