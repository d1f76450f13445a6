#!/usr/bin/env python
"""How many engine calls a burst of identical requests costs through `flowopt serve`.

    python benchmarks/single_flight.py [--burst 100] [--delay 0.5] [--json out.json]

A counting stub (a separate process: an OpenAI-compatible server that answers after
``--delay`` seconds and counts chat calls) stands in for the engine; a gateway with the
``cache`` middleware sits in front of it. For each setup a burst of ``--burst``
identical deterministic requests is sent at once, then a second burst after the first
has been answered, then (another question) one request followed by a burst; the stub's
count after each burst is the number of engine calls.

Setups: one worker with the in-memory store; two workers (``--workers 2``) with the
in-memory store (per process: each worker coalesces its own share of the burst); two
workers with a Redis exact tier (``exact_store: redis``; redis-server is started on a
free port). What it shows: single flight is per process, so a simultaneous burst reaches
the engine at most once per worker that received part of it; a shared exact tier is what
makes the *next* burst free in every worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from flowopt.gateway._background import free_port  # noqa: E402
from gateway import _wait_http  # noqa: E402  (benchmarks/gateway.py, beside this script)


def _stub_app(delay: float) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    calls = {"n": 0}

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    async def count(_: Request) -> Response:
        return JSONResponse(calls)

    async def chat(request: Request) -> Response:
        await request.json()
        calls["n"] += 1
        await asyncio.sleep(delay)  # the engine's work, not synchronisation
        return JSONResponse(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "stub",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Open Settings, then Reset."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
            }
        )

    return Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/count", count),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )


def _gateway(stub: str, workdir: Path, workers: int, redis_url: str | None) -> tuple[str, Any]:
    cache: dict[str, Any] = {"store": "memory"}
    if redis_url:
        cache |= {"exact_store": "redis", "exact_store_options": {"url": redis_url}}
    spec = {
        "name": "single-flight",
        "backend": {"vllm": {"base_url": stub, "model": "stub"}},
        "middleware": [{"cache": cache}],
        "defaults": {"temperature": 0, "max_tokens": 16},
        "steps": [{"name": "a", "prompt": "{input}"}],
    }
    path = workdir / f"sf-{workers}-{bool(redis_url)}.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    port = free_port()
    cmd = [sys.executable, "-m", "flowopt.cli", "serve", str(path), "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--workers", str(workers)])
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/health", proc)
    return url, proc


async def _burst(url: str, n: int, question: str) -> list[int]:
    body = {
        "model": "single-flight",
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
    }
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        rs = await asyncio.gather(
            *(client.post(url + "/v1/chat/completions", json=body) for _ in range(n))
        )
    return [r.status_code for r in rs]


def _count(stub: str) -> int:
    return int(httpx.get(stub + "/count").json()["n"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    procs: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        redis_url = None
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
        rport = free_port()
        procs.append(
            subprocess.Popen(
                [binary, "--port", str(rport), "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
        )
        redis_url = f"redis://127.0.0.1:{rport}/0"
        try:
            for workers, shared in ((1, False), (2, False), (2, True)):
                sport = free_port()
                stub_proc = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--serve-stub",
                        str(sport),
                        "--delay",
                        str(args.delay),
                    ]
                )
                procs.append(stub_proc)
                stub = f"http://127.0.0.1:{sport}"
                _wait_http(stub + "/v1/models", stub_proc)
                url, gw = _gateway(stub, work, workers, redis_url if shared else None)
                procs.append(gw)
                question = f"How do I reset my router? ({workers} workers, redis {shared})"
                first = asyncio.run(_burst(url, args.burst, question))
                after_first = _count(stub)
                second = asyncio.run(_burst(url, args.burst, question))
                # One request stored by whichever worker got it, then a burst: without a
                # shared tier the other workers call the engine again.
                after_second = _count(stub)
                other = question.replace("router", "modem")
                asyncio.run(_burst(url, 1, other))
                before = _count(stub)
                third = asyncio.run(_burst(url, args.burst, other))
                row = {
                    "workers": workers,
                    "exact_tier": "redis" if shared else "per-process memory",
                    "burst": args.burst,
                    "engine_calls_first_burst": after_first,
                    "engine_calls_second_burst": after_second - after_first,
                    "engine_calls_burst_after_one_stored": _count(stub) - before,
                    "non_200": sum(1 for s in first + second + third if s != 200),
                }
                print(json.dumps(row))
                results.append(row)
                for p in (gw, stub_proc):
                    p.terminate()
                    p.wait(20)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(20)
    return {"delay_s": args.delay, "load_avg": os.getloadavg(), "runs": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--delay", type=float, default=0.5, help="the stub engine's answer time (s)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--serve-stub", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_stub is not None:
        import uvicorn

        uvicorn.run(
            _stub_app(args.delay), host="127.0.0.1", port=args.serve_stub, log_level="warning"
        )
        return
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
