"""Helpers of the gateway tests (imported by conftest.py and the tests).

The pipeline carries two small real middleware written for these tests: ``TenantProbe``
records the identity each request reached the stack with, ``ShedUser`` refuses one user on
purpose (how a load shedder or tenant limit answers), so the tests can check tenancy and
429/Retry-After end to end without faking the backend.
"""

from __future__ import annotations

import asyncio
import threading
from typing import ClassVar

from flowopt.errors import Overloaded, RateLimited
from flowopt.gateway._background import BackgroundServer
from flowopt.middleware.base import CallNext, MiddlewareBase
from flowopt.types import Request, Response

API_KEY = "sk-acme-0123456789"
OTHER_KEY = "sk-globex-0123456789"


class TenantProbe(MiddlewareBase):
    """Records ``(tenant, user)`` of every request, by request id, and the requests of
    graph steps (``by_step``: step name -> the last request that step sent)."""

    name: ClassVar[str] = "probe"

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str | None, str | None]] = {}
        self.by_step: dict[str, Request] = {}

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        self.seen[request.request_id] = (request.tenant, request.user)
        if request.step is not None:
            self.by_step[request.step] = request
        return await call_next(request)


class ShedUser(MiddlewareBase):
    """Refuses requests of user ``shed-me`` (reason 'overloaded') and ``limit-me``
    (reason 'tenant_rate_limit'), as a load shedder / rate limiter would."""

    name: ClassVar[str] = "shed"

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        if request.user == "shed-me":
            raise Overloaded("shedding load", reason="overloaded", retry_after=2.5)
        if request.user == "limit-me":
            raise RateLimited("over the limit", reason="tenant_rate_limit", retry_after=7)
        return await call_next(request)


class LiveGateway:
    def __init__(self, server: BackgroundServer, probe: TenantProbe, model: str) -> None:
        self.server = server
        self.probe = probe
        self.model = model
        self.base_url = server.base_url
        self.api_key = API_KEY
        self.other_key = OTHER_KEY


class TcpRelay:
    """A real TCP relay between the gateway and vLLM that reports who hung up first.

    ``gateway_hung_up`` is set when the gateway side closes its connection while vLLM is
    still sending: the observable proof that the gateway abandoned the backend request
    (vLLM aborts a request whose connection closes).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self.gateway_hung_up = threading.Event()
        self.upstream_finished = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def pipe(
            reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter,
            on_eof: threading.Event,
            unless: threading.Event,
        ) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
                if not unless.is_set():
                    on_eof.set()  # this side hung up first
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            ur, uw = await asyncio.open_connection(*self._target)
            await asyncio.gather(
                pipe(cr, uw, self.gateway_hung_up, self.upstream_finished),
                pipe(ur, cw, self.upstream_finished, self.gateway_hung_up),
                return_exceptions=True,
            )

        async def main() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            async with server:
                await server.serve_forever()

        self._loop.run_until_complete(main())

    def start(self) -> TcpRelay:
        self._thread.start()
        self._ready.wait(10)
        return self
