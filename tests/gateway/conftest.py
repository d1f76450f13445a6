"""A real gateway over the real vLLM server, started once for the gateway tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.gateway.gateway_live import API_KEY, OTHER_KEY, LiveGateway, ShedUser, TenantProbe

from flowopt import pipeline
from flowopt.gateway._background import BackgroundServer
from flowopt.gateway.app import create_app
from flowopt.spec import GatewaySpec


@pytest.fixture(scope="session")
def live_gateway(vllm_url: str, served_model: str) -> Iterator[LiveGateway]:
    probe = TenantProbe()
    pipe = pipeline(
        "faq",
        backend={"vllm": {"base_url": vllm_url, "model": served_model}},
        middleware=[probe, ShedUser()],
        defaults={"temperature": 0, "max_tokens": 8},
        steps=[{"name": "answer", "prompt": "Answer in a few words: {input}"}],
    )
    settings = GatewaySpec(api_keys={"acme": API_KEY, "globex": OTHER_KEY})  # type: ignore[arg-type]
    with BackgroundServer(create_app(pipe, settings)) as server:
        yield LiveGateway(server, probe, served_model)
