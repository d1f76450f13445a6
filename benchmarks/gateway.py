"""Gateway overhead: what ``flowopt serve`` adds over calling the model server directly.

    python benchmarks/gateway.py --vllm http://127.0.0.1:8011 --out docs/results/gateway.json
    python benchmarks/gateway.py --floor --workers 2 --out docs/results/gateway_floor.json

Processes, as deployed: the gateway runs as ``flowopt serve`` (its own process, no-op
middleware), the client here; both target the same server. Two parts:

1. **added latency** (p50/p99, TTFT and E2E, sequential requests). Against vLLM the
   request-to-request noise of the CPU engine (several ms) drowns a sub-millisecond cost,
   so the added latency is measured twice:
   a) against an *instant stub* OpenAI server (``--stub``, a separate process that answers
      at once with fixed tokens: a stand-in, named as one, with no model behind it), where
      any difference is the gateway's own cost;
   b) against vLLM itself, direct and via the gateway interleaved request by request, as
      the end-to-end check.
2. **throughput at 64 concurrent streams** against vLLM: output tokens/s via the gateway /
   direct, alternating runs to cancel drift.

The client is flowopt's own bench client (``flowopt.bench.HTTPTarget``); it measures its
own parsing cost, reported alongside. Everything here shares 2 CPU cores with the vLLM
engine, so absolute numbers are pessimistic; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from flowopt.bench import HTTPTarget, Prompt, percentile
from flowopt.gateway._background import free_port

PROMPT = Prompt(({"role": "user", "content": "Say hello."},))


# -- the instant stub server (runs in its own process) ------------------------------------
def _stub_app(tokens: int) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def traces(_: Request) -> Response:  # an OTLP/HTTP sink for --floor's spans
        return Response(b"", media_type="application/x-protobuf")

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    async def chat(request: Request) -> Response:
        body = await request.json()
        if not body.get("stream"):
            message = {"role": "assistant", "content": "hi " * tokens}
            return JSONResponse(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "stub",
                    "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
                    "usage": {
                        "prompt_tokens": 5,
                        "completion_tokens": tokens,
                        "total_tokens": 5 + tokens,
                    },
                }
            )

        async def events() -> Any:
            for i in range(tokens):
                last = i == tokens - 1
                chunk = {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "stub",
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": "hi "},
                            "finish_reason": "length" if last else None,
                        }
                    ],
                }
                yield f"data: {json.dumps(chunk)}\n\n"
            usage = {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "stub",
                "choices": [],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": tokens,
                    "total_tokens": 5 + tokens,
                },
            }
            yield f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/traces", traces, methods=["POST"]),
        ]
    )


def _serve_stub(port: int, tokens: int) -> None:
    import uvicorn

    uvicorn.run(_stub_app(tokens), host="127.0.0.1", port=port, log_level="warning")


# -- process helpers ---------------------------------------------------------------------------
def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up in {timeout}s")


def _start_stub(tokens: int) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-stub", str(port), "--tokens", str(tokens)]
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/v1/models", proc)
    return url, proc


def _start_gateway(backend: str, model: str, workdir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    spec = workdir / f"gw-{model}.yaml"
    spec.write_text(
        f"name: overhead\nbackend: {{vllm: {{base_url: '{backend}', model: {model}}}}}\n"
        "middleware: [noop]\nsteps: [{name: a, prompt: '{input}'}]\n"
        "gateway: {expose_graph: false}\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from flowopt.cli import main; main()",
            "serve",
            str(spec),
            "--port",
            str(port),
        ]
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/health", proc)
    return url, proc


def emit(results: dict[str, Any], out: str | None) -> None:
    """Print ``results`` as JSON, and write them to ``out`` when given."""
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


# -- measurements ------------------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc): the gateway's own cost,
    which scheduling noise on a busy machine does not blur the way wall time is blurred."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(xs: list[float]) -> dict[str, float]:
    return {f"p{q}": round((percentile(xs, q) or 0.0) * 1000, 3) for q in (50, 90, 99)}


async def added_latency(
    direct_url: str, gw_url: str, model: str, n: int, tokens: int, gw_pid: int
) -> dict[str, Any]:
    """Sequential requests, direct and via the gateway interleaved one by one."""
    d = HTTPTarget(direct_url, model=model, max_tokens=tokens)
    g = HTTPTarget(gw_url, model=model, max_tokens=tokens)
    out: dict[str, list[float]] = {"d_ttft": [], "d_e2e": [], "g_ttft": [], "g_e2e": []}
    client_ms: list[float] = []
    try:
        for _ in range(5):  # connections, caches, JIT-free but cold paths
            await d.send(PROMPT, t0=0)
            await g.send(PROMPT, t0=0)
        cpu0 = _cpu_s(gw_pid)
        for i in range(n):
            order = ((d, "d"), (g, "g")) if i % 2 == 0 else ((g, "g"), (d, "d"))
            for target, key in order:
                s = await target.send(PROMPT, t0=0)
                if not s.ok or s.ttft is None:
                    raise SystemExit(f"request failed against {target.name}: {s.error}")
                out[f"{key}_ttft"].append(s.ttft)
                out[f"{key}_e2e"].append(s.e2e)
                client_ms.append(s.client_ms)
        cpu = _cpu_s(gw_pid) - cpu0
    finally:
        await d.aclose()
        await g.aclose()
    res: dict[str, Any] = {
        "requests_each": n,
        "max_tokens": tokens,
        "gateway_cpu_ms_per_request": round(cpu / n * 1000, 3),
    }
    for m in ("ttft", "e2e"):
        dp, gp = _pct(out[f"d_{m}"]), _pct(out[f"g_{m}"])
        # Paired: gateway minus direct within each interleaved pair, so drift in the
        # machine's load (which moves both sides of a pair alike) cancels out.
        paired = [g - d for g, d in zip(out[f"g_{m}"], out[f"d_{m}"], strict=True)]
        res[m] = {
            "direct_ms": dp,
            "gateway_ms": gp,
            "added_ms": {k: round(gp[k] - dp[k], 3) for k in dp},
            "paired_added_ms": {"p50": _pct(paired)["p50"]},
        }
    res["client_parse_ms_per_request_p50"] = round(percentile(client_ms, 50) or 0.0, 4)
    return res


async def _burst(url: str, model: str, streams: int, tokens: int) -> tuple[float, int]:
    t = HTTPTarget(
        url, model=model, max_tokens=tokens, extra={"ignore_eos": True} if model != "stub" else None
    )
    try:
        t0 = time.perf_counter()
        samples = await asyncio.gather(*(t.send(PROMPT, t0=t0) for _ in range(streams)))
        wall = time.perf_counter() - t0
    finally:
        await t.aclose()
    ok = [s for s in samples if s.ok]
    return sum(s.output_tokens for s in ok) / wall, len(samples) - len(ok)


async def throughput(
    direct_url: str, gw_url: str, model: str, streams: int, tokens: int, rounds: int
) -> dict[str, Any]:
    d_runs, g_runs, failed = [], [], 0
    await _burst(direct_url, model, 4, 4)  # warm both paths
    await _burst(gw_url, model, 4, 4)
    for r in range(rounds):
        order = ((direct_url, d_runs), (gw_url, g_runs))
        for url, runs in order if r % 2 == 0 else reversed(order):
            tps, f = await _burst(url, model, streams, tokens)
            runs.append(tps)
            failed += f
    d, g = sum(d_runs) / len(d_runs), sum(g_runs) / len(g_runs)
    return {
        "streams": streams,
        "max_tokens": tokens,
        "rounds": rounds,
        "direct_tok_s": [round(x, 1) for x in d_runs],
        "gateway_tok_s": [round(x, 1) for x in g_runs],
        "ratio": round(g / d, 4),
        "failed_requests": failed,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} CPUs (shared with the vLLM engine)"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stub_url, stub = _start_stub(args.stub_tokens)
        if args.floor:
            from _floor_compare import run as floor_run

            try:
                results["vs_floor"] = await floor_run(args, stub_url, work, _wait_http)
            finally:
                stub.terminate()
                stub.wait(10)
            return results
        gw_stub_url, gw_stub = _start_gateway(stub_url, "stub", work)
        try:
            results["stub_added_latency"] = await added_latency(
                stub_url, gw_stub_url, "stub", args.requests * 2, args.stub_tokens, gw_stub.pid
            )
            results["stub_throughput_64"] = await throughput(
                stub_url, gw_stub_url, "stub", args.streams, args.stub_tokens, args.rounds
            )
        finally:
            for p in (gw_stub, stub):
                p.terminate()
                p.wait(10)
        gw_url, gw = _start_gateway(args.vllm, args.model, work)
        try:
            results["vllm_added_latency"] = await added_latency(
                args.vllm, gw_url, args.model, args.requests, args.latency_tokens, gw.pid
            )
            results["vllm_throughput_64"] = await throughput(
                args.vllm, gw_url, args.model, args.streams, args.tokens, args.rounds
            )
        finally:
            gw.terminate()
            gw.wait(10)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vllm", default=os.environ.get("FLOWOPT_BASE_URL", "http://127.0.0.1:8011"))
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--requests", type=int, default=100, help="sequential requests per path")
    ap.add_argument("--latency-tokens", type=int, default=4)
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=32, help="tokens per stream (throughput)")
    ap.add_argument("--stub-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--floor",
        action="store_true",
        help="stub only: direct / floor proxy / flowopt interleaved (benchmarks/_floor_compare.py)",
    )
    ap.add_argument("--rps-requests", type=int, default=1280, help="requests per RPS run (--floor)")
    ap.add_argument("--workers", type=int, default=1, help="also measure RPS with N workers")
    ap.add_argument(
        "--baseline-src", default=None, help="--floor: also run flowopt from this src/ (before)"
    )
    ap.add_argument(
        "--middleware",
        default="noop",
        help="--floor: flowopt's middleware, comma-separated ('' for none: the direct route)",
    )
    ap.add_argument("--serve-stub", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_stub is not None:
        _serve_stub(args.serve_stub, args.tokens)
        return
    results = asyncio.run(main_async(args))
    emit(results, args.out)


if __name__ == "__main__":
    main()
