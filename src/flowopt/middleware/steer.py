"""Steering: the terminal handler that dispatches each request to the backend it names.

Why a terminal and not a middleware: a pipeline builds *one* middleware stack, so a triage
layer that called another backend directly would skip every layer below it (retries,
limits, shedding). Instead, layers above *decide* by setting the request's typed routing
fields (:attr:`~flowopt.types.Request.route`, :attr:`~flowopt.types.Request.avoid`), and
this terminal *dispatches* — tower's ``steer`` split into decision and dispatch:

- ``request.route``: the name of the backend (tier) to call; ``None``: the default.
- ``request.avoid``: endpoints that must get no request. A backend with several replicas
  picks among the others; when every endpoint of the chosen backend is avoided the
  terminal raises :class:`~flowopt.errors.EndpointCoolingDown` without any network I/O.

Side calls (the triage judge, the cascade verifier) are requests too: the middleware that
makes one sends it through its own ``call_next`` with a route, so it passes the same layers
below and ends here, in its own traced ``chat {model}`` span.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowopt.backends.base import Backend
from flowopt.errors import ConfigError, EndpointCoolingDown
from flowopt.middleware.base import CallNext, traced_backend
from flowopt.types import Request, Response

__all__ = ["backend_endpoints", "steered_backend"]


def backend_endpoints(backend: Any) -> list[str]:
    """The endpoint URLs a backend may send to (its replicas), or its display endpoint."""
    urls = getattr(backend, "base_urls", None)
    if urls:
        return [str(u) for u in urls]
    return [str(backend.endpoint_for_display())]


def steered_backend(
    backends: Mapping[str, Backend], *, default: str = "default", **traced: Any
) -> CallNext:
    """A terminal over several named backends: calls ``backends[request.route]`` (or
    ``default``) inside its traced ``chat {model}`` span, and refuses at once when all of
    that backend's endpoints are avoided. ``traced`` is passed to
    :func:`~flowopt.middleware.base.traced_backend`."""
    handlers = {name: traced_backend(b, name=name, **traced) for name, b in backends.items()}
    endpoints = {name: backend_endpoints(b) for name, b in backends.items()}

    async def steer(request: Request) -> Response:
        name = request.route or default
        handler = handlers.get(name)
        if handler is None:
            raise ConfigError(
                f"request {request.request_id} was routed to backend {name!r}, "
                f"which this pipeline does not have (it has {sorted(handlers)})",
                hint="declare it under `backends:` in the spec, or fix the tier's backend name",
            )
        if request.avoid:
            avoid = request.avoided()
            mine = endpoints[name]
            if avoid and all(u in avoid for u in mine):
                raise EndpointCoolingDown(
                    f"every endpoint of backend {name!r} is cooling down",
                    endpoint=",".join(mine),
                    retry_after=max(0.0, min(avoid[u] for u in mine)),
                    request_id=request.request_id,
                    hint="the resilience layer falls back to another tier; add replicas or tiers",
                )
        return await handler(request)

    return steer
