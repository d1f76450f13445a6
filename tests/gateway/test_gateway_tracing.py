"""The gateway's SERVER span and the pipeline's spans form one tree when the spec gives the
pipeline an exporter (and so a provider) of its own (FakeBackend; no server)."""

from __future__ import annotations

import httpx
from tests.otlp_receiver import otlp_receiver

from flowopt import pipeline
from flowopt.gateway.app import create_app
from flowopt.testing import FakeBackend


def _chain(span: dict[str, object], by_id: dict[str, dict[str, object]]) -> list[str]:
    names = []
    cur = span
    while cur["parent_id"] in by_id:
        cur = by_id[str(cur["parent_id"])]
        names.append(str(cur["name"]))
    return names


async def test_server_span_and_pipeline_spans_share_the_pipelines_provider() -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with otlp_receiver() as rx:
        pipe = pipeline(
            "gw-own",
            backend=FakeBackend(),
            steps=[{"name": "answer", "prompt": "{input}"}],
            middleware=["noop"],
            tracing={"exporter": "otlp", "endpoint": rx.endpoint, "service_name": "gw-own"},
        )
        app = create_app(pipe)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw"
        ) as c:
            headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
            single = await c.post(
                "/v1/chat/completions",
                headers=headers,
                json={"messages": [{"role": "user", "content": "hi"}]},
            )
            graph = await c.post(
                "/v1/chat/completions",
                headers=headers,
                json={"model": "gw-own", "messages": [{"role": "user", "content": "hi"}]},
            )
        assert single.status_code == 200 and graph.status_code == 200, graph.text
        assert single.headers["x-flowopt-trace-id"] == trace_id
        assert pipe.tracing.force_flush()
        spans = rx.of_trace(trace_id)
    by_id = {str(s["span_id"]): s for s in spans}
    servers = [s for s in spans if s["name"] == "POST /v1/chat/completions"]
    assert len(servers) == 2 and all(s["parent_id"] == parent for s in servers), rx.dump()
    chats = [s for s in spans if str(s["name"]).startswith("chat ")]
    assert len(chats) == 2
    chains = sorted(_chain(c, by_id) for c in chats)
    assert chains == [
        ["middleware noop", "POST /v1/chat/completions"],
        ["middleware noop", "step answer", "pipeline gw-own", "POST /v1/chat/completions"],
    ]


async def test_a_streamed_graph_run_is_a_child_of_the_request_span() -> None:
    """The stream's events are produced after the endpoint returned (the ASGI server calls
    the response): the graph's spans, started then, must still hang under the request."""
    trace_id, parent = "5bf92f3577b34da6a3ce929d0e0e4737", "00f067aa0ba902b8"
    with otlp_receiver() as rx:
        pipe = pipeline(
            "gw-stream",
            backend=FakeBackend(),
            steps=[{"name": "answer", "prompt": "{input}"}],
            middleware=["noop"],
            tracing={"exporter": "otlp", "endpoint": rx.endpoint, "service_name": "gw-stream"},
        )
        app = create_app(pipe)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw"
        ) as c:
            answer = await c.post(
                "/v1/chat/completions",
                headers={"traceparent": f"00-{trace_id}-{parent}-01"},
                json={
                    "model": "gw-stream",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
        assert answer.status_code == 200 and answer.text.endswith("data: [DONE]\n\n")
        assert pipe.tracing.force_flush()
        spans = rx.of_trace(trace_id)
    by_id = {str(s["span_id"]): s for s in spans}
    chats = [s for s in spans if str(s["name"]).startswith("chat ")]
    assert len(chats) == 1, rx.dump()
    assert _chain(chats[0], by_id) == [
        "middleware noop",
        "step answer",
        "pipeline gw-stream",
        "POST /v1/chat/completions",
    ]
