"""flowopt's own cost: (a) per no-op middleware hop in-process, (b) throughput through a
pipeline vs the bare ``openai`` async client against the same vLLM server.

    python benchmarks/overhead.py --base-url http://127.0.0.1:8000 [--requests 64] [--json out]

Figures are ratios against a baseline measured in the same process, interleaved, because
these machines are noisy. Results are recorded in docs/benchmarks/overhead.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from flowopt import Request, Response, pipeline
from flowopt._lean_trace import LeanTracer
from flowopt._span_scope import activated
from flowopt.middleware.base import build_stack, traced_backend
from flowopt.middleware.builtin import NoOp
from flowopt.tracing import PipelineTracing


class _DropExporter(SpanExporter):
    """Exports nothing: prices span creation/recording, not the network."""

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _InstantBackend:
    """A zero-latency backend (a fake) so only the stack itself is timed."""

    provider = "bench"
    model = "bench"
    _resp = Response(text="ok", model="bench")

    async def generate(self, request: Request) -> Response:
        return self._resp

    async def model_info(self) -> Any:
        raise NotImplementedError

    def endpoint_for_display(self) -> str:
        return "bench://"

    async def aclose(self) -> None:
        return None


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _stacks(backend: Any, n_mw: int, traced: bool, tracing: Any) -> tuple[Any, Any]:
    """(no middleware, n no-op middleware) over ``backend``, made with ``tracing``."""
    bare = build_stack([], traced_backend(backend, name="b", tracing=tracing), traced=traced)
    stack = build_stack(
        [(f"noop{i}", NoOp()) for i in range(n_mw)],
        traced_backend(backend, name="b", tracing=tracing),
        traced=traced,
        tracing=tracing,
    )
    return bare, stack


async def hop_cost(n_mw: int = 10, calls: int = 20000, traced: bool = False) -> dict[str, Any]:
    """Per-hop cost = (latency with n no-op middleware - latency with none) / n.

    Traced, three tracers in one interleaved loop: flowopt's (the lean spans of
    ``flowopt._lean_trace``), the plain SDK tracer behind the same code, and bare SDK spans
    (start, make current, end: no flowopt code at all)."""
    backend = _InstantBackend()
    variants: dict[str, tuple[Any, Any]] = {}
    sdk_tracer = trace.get_tracer("flowopt")
    if traced:
        lean = PipelineTracing(tracer=LeanTracer(sdk_tracer))
        variants["lean"] = _stacks(backend, n_mw, True, lean)
        variants["sdk"] = _stacks(backend, n_mw, True, PipelineTracing(tracer=sdk_tracer))
    else:
        variants["untraced"] = _stacks(backend, n_mw, False, None)
    req = Request.chat("hi")
    base: dict[str, list[float]] = {k: [] for k in variants}
    full: dict[str, list[float]] = {k: [] for k in variants}
    sdk: list[float] = []
    tracer = trace.get_tracer("overhead-baseline")
    for _ in range(1000):  # warm-up
        for bare, stack in variants.values():
            await bare(req)
            await stack(req)
    for _ in range(calls):
        for key, (bare, stack) in variants.items():
            t0 = time.perf_counter_ns()
            await bare(req)
            t1 = time.perf_counter_ns()
            await stack(req)
            t2 = time.perf_counter_ns()
            base[key].append((t1 - t0) / 1000)
            full[key].append((t2 - t1) / 1000)
        if traced:
            # The floor of a traced hop with the SDK, interleaved: n bare SDK spans made
            # current and ended (what any hop with its own SDK span costs).
            t3 = time.perf_counter_ns()
            for _ in range(n_mw):
                span = tracer.start_span("baseline")
                token = context.attach(trace.set_span_in_context(span))
                context.detach(token)
                span.end()
            sdk.append((time.perf_counter_ns() - t3) / 1000)
    out: dict[str, Any] = {"middleware": n_mw, "traced": traced}
    for key in variants:
        out[key] = {
            "hop_p50_us": (_pct(full[key], 0.5) - _pct(base[key], 0.5)) / n_mw,
            "hop_p99_us": (_pct(full[key], 0.99) - _pct(base[key], 0.99)) / n_mw,
            "stack_p50_us": _pct(full[key], 0.5),
            "bare_p50_us": _pct(base[key], 0.5),
        }
    if traced:
        out["sdk_span_p50_us"] = _pct(sdk, 0.5) / n_mw
        out["lean_vs_sdk_hop_p50"] = out["lean"]["hop_p50_us"] / out["sdk"]["hop_p50_us"]
        out["lean_hop_vs_sdk_span_p50"] = out["lean"]["hop_p50_us"] / out["sdk_span_p50_us"]
        out["sdk_hop_vs_sdk_span_p50"] = out["sdk"]["hop_p50_us"] / out["sdk_span_p50_us"]
    return out


def request_spans(calls: int = 5000) -> dict[str, float]:
    """The spans of one gateway request, nothing else: the SERVER span under a caller's
    ``traceparent``, one middleware span with its decision, the backend CLIENT span with
    its GenAI request and response attributes (flowopt's own functions throughout), lean
    and plain SDK tracer interleaved. Returns p50 µs per request for each."""
    from flowopt.gateway.tracing import end_span, server_span
    from flowopt.tracing import record_decisions, record_request, record_response
    from flowopt.types import Decision, Usage

    sdk_tracer = trace.get_tracer("flowopt")
    tracers = {"lean": LeanTracer(sdk_tracer), "sdk": sdk_tracer}
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    req = Request.chat("hi", model="smollm2")
    resp = Response(
        text="ok",
        model="smollm2",
        usage=Usage(12, 30),
        latency_ms=12.5,
        endpoint="http://127.0.0.1:8011/v1",
        decisions=(Decision("cache", "miss", {"score": 0.42}),),
    )

    def one(tracer: Any) -> None:
        route = "/v1/chat/completions"
        server, _ = server_span(f"POST {route}", headers, route, tracer)
        with activated(server):
            mw = tracer.start_span("middleware cache")
            with activated(mw):
                chat = tracer.start_span("chat smollm2", kind=trace.SpanKind.CLIENT)
                record_request(chat, req, provider="vllm", endpoint="http://127.0.0.1:8011/v1")
                with activated(chat):
                    pass
                record_response(chat, resp)
                chat.end()
            record_decisions(mw, resp.decisions, "cache")
            mw.end()
        end_span(server, 200)

    times: dict[str, list[float]] = {k: [] for k in tracers}
    for _ in range(500):
        for tracer in tracers.values():
            one(tracer)
    for _ in range(calls):
        for key, tracer in tracers.items():
            t0 = time.perf_counter_ns()
            one(tracer)
            times[key].append((time.perf_counter_ns() - t0) / 1000)
    out = {f"{k}_p50_us": _pct(v, 0.5) for k, v in times.items()}
    out["lean_vs_sdk_p50"] = out["lean_p50_us"] / out["sdk_p50_us"]
    return out


async def _bare_openai(
    base_url: str, model: str, prompts: list[str], conc: int, max_tokens: int
) -> tuple[float, int]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="none", max_retries=0)
    sem = asyncio.Semaphore(conc)
    tokens = 0

    async def one(p: str) -> None:
        nonlocal tokens
        async with sem:
            r = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": p}],
                temperature=0,
                max_tokens=max_tokens,
            )
            tokens += r.usage.completion_tokens if r.usage else 0

    t0 = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    el = time.perf_counter() - t0
    await client.close()
    return el, tokens


async def _flowopt(pipe: Any, prompts: list[str], conc: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    results = await pipe.abatch(prompts, concurrency=conc)
    el = time.perf_counter() - t0
    return el, sum(r.usage.output_tokens for r in results)


async def throughput(
    base_url: str, model: str, n: int, max_tokens: int, levels: list[int], rounds: int
) -> list[dict[str, float]]:
    pipe = pipeline(
        "overhead",
        backend={"vllm": {"base_url": base_url, "model": model}},
        middleware=["noop"],
        defaults={"temperature": 0, "max_tokens": max_tokens},
        steps=[{"name": "answer", "prompt": "{input}"}],
    )
    out = []
    for conc in levels:
        prompts = [f"Write one sentence about the number {i}." for i in range(n)]
        await _bare_openai(base_url, model, prompts[: min(8, n)], conc, max_tokens)  # warm
        b_el = f_el = 0.0
        b_tok = f_tok = 0
        for _ in range(rounds):  # interleave so drift hits both sides alike
            el, tok = await _bare_openai(base_url, model, prompts, conc, max_tokens)
            b_el, b_tok = b_el + el, b_tok + tok
            el, tok = await _flowopt(pipe, prompts, conc)
            f_el, f_tok = f_el + el, f_tok + tok
        row = {
            "concurrency": conc,
            "bare_req_s": rounds * n / b_el,
            "flowopt_req_s": rounds * n / f_el,
            "bare_tok_s": b_tok / b_el,
            "flowopt_tok_s": f_tok / f_el,
        }
        row["req_ratio"] = row["flowopt_req_s"] / row["bare_req_s"]
        row["tok_ratio"] = row["flowopt_tok_s"] / row["bare_tok_s"]
        out.append(row)
        print(
            f"  c={conc:>3}: bare {row['bare_req_s']:.2f} req/s {row['bare_tok_s']:.0f} tok/s | "
            f"flowopt {row['flowopt_req_s']:.2f} req/s {row['flowopt_tok_s']:.0f} tok/s | "
            f"ratio req {row['req_ratio']:.3f} tok {row['tok_ratio']:.3f}"
        )
    await pipe.aclose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-url", default=None, help="vLLM server; omit to skip part (b)")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--json", default=None, help="write the figures to this file")
    args = ap.parse_args()

    report: dict[str, Any] = {"hop": []}
    print("(a) per no-op middleware hop, in-process")
    r = asyncio.run(hop_cost(calls=args.calls, traced=False))
    report["hop"].append(r)
    u = r["untraced"]
    print(f"  untraced: p50 {u['hop_p50_us']:.2f} us  p99 {u['hop_p99_us']:.2f} us per hop")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_DropExporter(), max_queue_size=1 << 20))
    trace.set_tracer_provider(provider)
    r = asyncio.run(hop_cost(calls=args.calls, traced=True))
    report["hop"].append(r)
    for key, label in (("lean", "flowopt lean spans"), ("sdk", "plain SDK tracer")):
        print(
            f"  traced ({label}, batch processor): p50 {r[key]['hop_p50_us']:.2f} us  "
            f"p99 {r[key]['hop_p99_us']:.2f} us per hop"
        )
    print(
        f"  bare SDK span (start, current, end) {r['sdk_span_p50_us']:.2f} us in the same "
        f"loop; lean hop / SDK hop {r['lean_vs_sdk_hop_p50']:.2f}x, lean hop / SDK span "
        f"{r['lean_hop_vs_sdk_span_p50']:.2f}x, SDK hop / SDK span "
        f"{r['sdk_hop_vs_sdk_span_p50']:.2f}x"
    )
    q = request_spans(max(1000, args.calls // 2))
    report["request_spans"] = q
    print(
        f"  one gateway request's 3 spans (~25 attributes): lean {q['lean_p50_us']:.1f} us, "
        f"SDK {q['sdk_p50_us']:.1f} us p50 ({q['lean_vs_sdk_p50']:.2f}x)"
    )
    report["load"] = os.getloadavg()
    print(f"  load average {report['load'][0]:.2f} {report['load'][1]:.2f} {report['load'][2]:.2f}")
    if args.base_url:
        print(
            f"(b) throughput vs bare openai client, {args.requests} requests x "
            f"{args.rounds} rounds, max_tokens {args.max_tokens}"
        )
        levels = [int(x) for x in args.levels.split(",")]
        report["throughput"] = asyncio.run(
            throughput(
                args.base_url, args.model, args.requests, args.max_tokens, levels, args.rounds
            )
        )
        ratios = [row["req_ratio"] for row in report["throughput"]]
        print(f"  median req/s ratio {statistics.median(ratios):.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
