"""Run a gateway app in a background thread (tests, benchmarks, notebooks).

Why a thread with its own event loop: synchronous clients (the ``openai`` client,
LangChain's ``invoke``) block the thread they run in, so a server sharing their loop would
deadlock. Readiness is signalled by uvicorn's own start-up (a threading event set once the
socket listens), never by waiting a fixed time.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Any

from flowopt._gateway_spec import GatewaySpec
from flowopt.errors import ConfigError
from flowopt.gateway.server import _uvicorn, limits

__all__ = ["BackgroundServer", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings_of(app: Any) -> GatewaySpec:
    """The gateway settings of a gateway app (its connection limits apply); defaults for
    any other ASGI app."""
    gw = getattr(getattr(app, "state", None), "gateway", None)
    settings = getattr(gw, "settings", None)
    return settings if isinstance(settings, GatewaySpec) else GatewaySpec()


class BackgroundServer:
    """``with BackgroundServer(app) as srv: srv.base_url`` -> ``http://127.0.0.1:P``.

    Served as ``flowopt serve`` serves: with the app's connection limits
    (:func:`flowopt.gateway.server.limits`)."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        start_timeout: float = 60.0,
        access_log: bool = False,
    ) -> None:
        uvicorn = _uvicorn()
        self.host = host
        self.port = port or free_port()
        self._timeout = start_timeout
        ready = threading.Event()
        self._ready = ready

        class _Server(uvicorn.Server):  # type: ignore[misc,name-defined]
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets=sockets)
                ready.set()

        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level="warning",
            access_log=access_log,
            lifespan="on",
            **limits(_settings_of(app)),
        )
        self._server = _Server(config)

        def run() -> None:
            try:
                self._server.run()
            finally:
                ready.set()  # a failed start-up must not leave start() waiting

        self._thread = threading.Thread(target=run, name="flowopt-gateway", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        if not self._ready.wait(self._timeout) or not self._server.started:
            raise ConfigError(
                f"the gateway did not start on {self.base_url} within {self._timeout:.0f}s",
                hint="is the port free? is the backend reachable? see the log above",
            )
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
