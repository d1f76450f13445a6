"""The gateway's Prometheus metrics.

Why a registry per app: tests and embedders create several gateways in one process, and
the default global registry refuses a second metric of the same name. With
``--workers N`` each worker is a process; when ``PROMETHEUS_MULTIPROC_DIR`` is set (``flowopt
serve`` sets it for N > 1) values live in shared files and ``/metrics`` aggregates every
worker, as prometheus_client's multiprocess mode documents.

Labels are bounded on purpose (route, model name from the served list, error kind, a
decision's middleware/action): never a tenant, user or request id, which would explode the
series count and leak identity.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from flowopt.errors import MissingDependencyError
from flowopt.result import Speculation
from flowopt.types import Response

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Latency buckets (seconds) from a cache hit (~ms) to a long CPU generation (~minutes).
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TTFT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _prom() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MissingDependencyError(
            "prometheus_client", "gateway", "the gateway's /metrics"
        ) from None
    return prometheus_client


class GatewayMetrics:
    """Counters and histograms of one gateway; :meth:`render` is the ``/metrics`` body."""

    def __init__(self) -> None:
        prom = _prom()
        self._prom = prom
        self._multiproc = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry: CollectorRegistry = prom.CollectorRegistry(auto_describe=True)
        reg = self.registry

        def counter(name: str, doc: str, labels: list[str]) -> Any:
            return prom.Counter(name, doc, labels, registry=reg)

        self.requests = counter(
            "flowopt_gateway_requests",
            "Requests answered, by route, model and status code.",
            ["route", "model", "status"],
        )
        self.errors = counter(
            "flowopt_gateway_errors",
            "Failed requests by error kind.",
            ["route", "kind"],
        )
        self.latency = prom.Histogram(
            "flowopt_gateway_request_duration_seconds",
            "Time from request received to last byte of the answer.",
            ["route", "model"],
            buckets=_LATENCY,
            registry=reg,
        )
        self.ttft = prom.Histogram(
            "flowopt_gateway_time_to_first_token_seconds",
            "Time from request received to the first streamed token sent.",
            ["route", "model"],
            buckets=_TTFT,
            registry=reg,
        )
        self.tokens = counter(
            "flowopt_gateway_tokens",
            "Tokens processed, by direction (input/output/cached).",
            ["model", "direction"],
        )
        self.cache = counter(
            "flowopt_gateway_cache_lookups",
            "Cache decisions seen on answers (hit/miss...).",
            ["result"],
        )
        self.routes = counter(
            "flowopt_gateway_routes",
            "Answers by the backend (tier) that produced them.",
            ["backend"],
        )
        self.decisions = counter(
            "flowopt_gateway_decisions",
            "Every middleware decision, by middleware and action.",
            ["middleware", "action"],
        )
        self.shed = counter(
            "flowopt_gateway_shed",
            "Requests refused on purpose (load shed, limits).",
            ["reason"],
        )
        self.disconnects = counter(
            "flowopt_gateway_client_disconnects",
            "Requests whose client left before the answer; the backend call was cancelled.",
            ["route"],
        )
        # Workflow speculation (docs/speculation.md): fed by the pipeline's speculated
        # edges through flowopt.speculate.observe, so speculation needs no metrics library.
        self.speculation = counter(
            "flowopt_speculation",
            "Runs of a speculated edge, by outcome (hit, miss, hit_rerun, a_failed, "
            "skipped_gate, skipped_budget, skipped_shed, skipped_queue).",
            ["pipeline", "edge", "outcome"],
        )
        self.speculation_wasted = counter(
            "flowopt_speculation_wasted_tokens",
            "Tokens spent on wrong guesses (cancelled or discarded), by kind.",
            ["pipeline", "edge", "kind"],
        )
        self.speculation_saved = counter(
            "flowopt_speculation_saved_seconds",
            "Latency saved by committed guesses.",
            ["pipeline", "edge"],
        )
        self.speculation_lost = counter(
            "flowopt_speculation_lost_seconds",
            "Latency lost to wrong guesses (cancelling them).",
            ["pipeline", "edge"],
        )
        self.speculation_queue_unknown = counter(
            "flowopt_speculation_queue_unknown",
            "Speculation decisions taken without a fresh reading of the backend's queue.",
            ["pipeline", "edge"],
        )
        self.in_flight = prom.Gauge(
            "flowopt_gateway_in_flight",
            "Requests being answered now.",
            registry=reg,
            multiprocess_mode="livesum",
        )

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, memoised: the client's ``labels`` takes a lock and
        validates on every call (~2 µs; six calls a request). Labels are bounded (never a
        tenant or id); the memo is capped as well, beyond which it just asks the client."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = metric.labels(*values)
            if len(self._children) < 4096:
                self._children[key] = found
        return found

    def observe_answer(self, route: str, model: str, response: Response, seconds: float) -> None:
        """Record one complete answer: status 200, latency, tokens and its decisions."""
        child = self.child
        child(self.requests, route, model, "200").inc()
        child(self.latency, route, model).observe(seconds)
        u = response.usage
        if u.input_tokens:
            child(self.tokens, model, "input").inc(u.input_tokens)
        if u.output_tokens:
            child(self.tokens, model, "output").inc(u.output_tokens)
        if u.cached_input_tokens:
            child(self.tokens, model, "cached").inc(u.cached_input_tokens)
        if response.backend:
            child(self.routes, response.backend).inc()
        for d in response.decisions:
            child(self.decisions, d.middleware, d.action).inc()
            if d.middleware == "cache":
                child(self.cache, d.action).inc()
        if response.cached and not any(d.middleware == "cache" for d in response.decisions):
            child(self.cache, "hit").inc()

    def observe_speculation(self, pipeline: str, record: Speculation) -> None:
        """Count one run of a speculated edge (an observer for flowopt.speculate.observe)."""
        child, edge = self.child, record.edge
        child(self.speculation, pipeline, edge, record.outcome).inc()
        w = record.wasted
        if w.input_tokens:
            child(self.speculation_wasted, pipeline, edge, "prompt").inc(w.input_tokens)
        if w.output_tokens:
            child(self.speculation_wasted, pipeline, edge, "completion").inc(w.output_tokens)
        if record.saved_ms:
            child(self.speculation_saved, pipeline, edge).inc(record.saved_ms / 1000.0)
        if record.lost_ms:
            child(self.speculation_lost, pipeline, edge).inc(record.lost_ms / 1000.0)
        if record.queue_unknown:
            child(self.speculation_queue_unknown, pipeline, edge).inc()

    def observe_error(self, route: str, model: str, status: int, kind: str) -> None:
        self.requests.labels(route, model, str(status)).inc()
        self.errors.labels(route, kind).inc()

    def render(self) -> bytes:
        prom = self._prom
        if self._multiproc:
            from prometheus_client import multiprocess

            reg = prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
            return bytes(prom.generate_latest(reg))
        return bytes(prom.generate_latest(self.registry))
