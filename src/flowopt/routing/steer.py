"""Steering: the terminal handler that lets middleware pick a backend per request.

Why a terminal and not a middleware: a pipeline builds one stack per backend, so a triage
layer that called another backend directly would skip every layer below it (retries,
limits, shedding). Instead, layers above *decide* by writing two metadata keys, and this
terminal *dispatches* — tower's ``steer`` split into decision and dispatch:

- :data:`ROUTE_KEY` (``"flowopt.route"``): the name of the backend (tier) to call. Absent:
  the stack's own backend.
- :data:`AVOID_KEY` (``"flowopt.avoid"``): ``{endpoint_url: monotonic_until}``. Endpoints
  that must get no request (cooling down after a 429, circuit open, just failed). A backend
  with several replicas picks among the others; when every endpoint of the chosen backend is
  avoided the terminal raises :class:`EndpointCoolingDown` without any network I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from flowopt.backends.base import Backend
from flowopt.errors import BackendUnavailable, ConfigError
from flowopt.middleware.base import Handler, traced_backend
from flowopt.tracing import PipelineTracing
from flowopt.types import Request

__all__ = [
    "AVOID_KEY",
    "ROUTE_KEY",
    "EndpointCoolingDown",
    "avoided",
    "backend_endpoints",
    "route_of",
    "steered_backend",
    "with_avoid",
    "with_route",
]

ROUTE_KEY = "flowopt.route"
AVOID_KEY = "flowopt.avoid"


class EndpointCoolingDown(BackendUnavailable):
    """Every endpoint of the chosen backend is cooling down or has its circuit open.
    Nothing was sent. ``retry_after`` is when the first of them may take traffic again."""

    code = "flowopt.backend.cooling_down"


def backend_endpoints(backend: Any) -> list[str]:
    """The endpoint URLs a backend may send to (its replicas), or its display endpoint."""
    urls = getattr(backend, "base_urls", None)
    if urls:
        return [str(u) for u in urls]
    return [str(backend.endpoint_for_display())]


def route_of(request: Request) -> str | None:
    value = request.metadata.get(ROUTE_KEY)
    return None if value is None else str(value)


def avoided(request: Request, now: float | None = None) -> dict[str, float]:
    """Endpoints still to be avoided at ``now``: ``{url: seconds_left}``."""
    raw = request.metadata.get(AVOID_KEY) or {}
    t = time.monotonic() if now is None else now
    return {str(u): until - t for u, until in dict(raw).items() if until > t}


def with_route(request: Request, backend: str) -> Request:
    return request.replace(metadata={**request.metadata, ROUTE_KEY: backend})


def with_avoid(request: Request, extra: Mapping[str, float]) -> Request:
    """Add ``{url: monotonic_until}`` to the avoid set (keeping the later deadline)."""
    if not extra:
        return request
    merged = dict(request.metadata.get(AVOID_KEY) or {})
    for url, until in extra.items():
        merged[url] = max(until, merged.get(url, until))
    return request.replace(metadata={**request.metadata, AVOID_KEY: merged})


def steered_backend(
    backends: Mapping[str, Backend], *, default: str, tracing: PipelineTracing | None = None
) -> Handler:
    """A terminal over several named backends: calls ``backends[route]`` (or ``default``)
    inside its traced ``chat {model}`` span (``tracing``: the pipeline's), and refuses at
    once when all of that backend's endpoints are avoided."""
    handlers = {name: traced_backend(b, name=name, tracing=tracing) for name, b in backends.items()}
    endpoints = {name: backend_endpoints(b) for name, b in backends.items()}

    async def steer(request: Request) -> Any:
        name = route_of(request) or default
        handler = handlers.get(name)
        if handler is None:
            raise ConfigError(
                f"a middleware routed request {request.request_id} to backend {name!r}, "
                f"which this pipeline does not have (it has {sorted(handlers)})",
                hint="declare it under `backends:` in the spec, or fix the tier's backend name",
            )
        avoid = avoided(request)
        if avoid and all(u in avoid for u in endpoints[name]):
            wait = min(avoid[u] for u in endpoints[name])
            raise EndpointCoolingDown(
                f"every endpoint of backend {name!r} is cooling down",
                endpoint=",".join(endpoints[name]),
                retry_after=max(0.0, wait),
                request_id=request.request_id,
                hint="the resilience layer falls back to another tier; add replicas or tiers",
            )
        return await handler(request)

    return steer
