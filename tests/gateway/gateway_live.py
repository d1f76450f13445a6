"""Helpers of the gateway tests (imported by conftest.py and the tests).

The pipeline carries two small real middleware written for these tests: ``TenantProbe``
records the identity each request reached the stack with, ``ShedUser`` refuses one user on
purpose (how a load shedder or tenant limit answers), so the tests can check tenancy and
429/Retry-After end to end without faking the backend.
"""

from __future__ import annotations

from typing import ClassVar

from flowopt.errors import RejectedError
from flowopt.gateway.background import BackgroundServer
from flowopt.middleware.base import CallNext, MiddlewareBase
from flowopt.types import Request, Response

API_KEY = "sk-acme-0123456789"
OTHER_KEY = "sk-globex-0123456789"


class TenantProbe(MiddlewareBase):
    """Records ``(tenant, user)`` of every request, by request id."""

    name: ClassVar[str] = "probe"

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str | None, str | None]] = {}

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        self.seen[request.request_id] = (request.tenant, request.user)
        return await call_next(request)


class ShedUser(MiddlewareBase):
    """Refuses requests of user ``shed-me`` (reason 'overloaded') and ``limit-me``
    (reason 'tenant_rate_limit'), as a load shedder / rate limiter would."""

    name: ClassVar[str] = "shed"

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        if request.user == "shed-me":
            raise RejectedError("shedding load", reason="overloaded", retry_after=2.5)
        if request.user == "limit-me":
            raise RejectedError("over the limit", reason="tenant_rate_limit", retry_after=7)
        return await call_next(request)


class LiveGateway:
    def __init__(self, server: BackgroundServer, probe: TenantProbe, model: str) -> None:
        self.server = server
        self.probe = probe
        self.model = model
        self.base_url = server.base_url
        self.api_key = API_KEY
        self.other_key = OTHER_KEY


