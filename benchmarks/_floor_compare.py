"""``benchmarks/gateway.py --floor``: direct / floor / flowopt, interleaved, one run.

Three targets against the same instant stub: the stub itself (direct), the feature-free
pass-through proxy (``gateway_floor.py``, the floor) and ``flowopt serve`` with auth, metrics
and spans on (OTLP/HTTP export to the stub's sink). Reports added TTFT p50/p99 over direct
for streamed and JSON answers, CPU per request of each proxy process (its own CPU time,
``/proc``) and requests/s at 64 concurrent, each as a ratio to the floor.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from flowopt.bench import percentile
from flowopt.gateway._background import free_port

KEY = "bench-key-0123456789"
HERE = Path(__file__).parent


def _body(stream: bool, tokens: int) -> bytes:
    import json

    return json.dumps(
        {
            "model": "stub",
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": tokens,
            "temperature": 0,
            "stream": stream,
        }
    ).encode()


def start_floor(upstream: str, wait: Any) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "gateway_floor.py"),
            "--port",
            str(port),
            "--upstream",
            upstream,
        ]
    )
    url = f"http://127.0.0.1:{port}"
    wait(url + "/v1/models", proc)
    return url, proc


def start_flowopt(
    upstream: str,
    work: Path,
    wait: Any,
    workers: int = 1,
    src: str | None = None,
    middleware: str = "noop",
) -> tuple[str, subprocess.Popen[bytes]]:
    """``flowopt serve`` with auth, metrics and OTLP spans on; ``src``: another checkout's
    ``src/`` (a baseline version, first on ``PYTHONPATH``); ``middleware``: the spec's
    middleware list, comma-separated (empty: none, the gateway's direct-model route)."""
    spec = work / f"gw-floor-{workers}.yaml"
    spec.write_text(
        f"name: overhead\nbackend: {{vllm: {{base_url: '{upstream}', model: stub}}}}\n"
        f"middleware: [{middleware}]\nsteps: [{{name: a, prompt: '{{input}}'}}]\n"
        f"tracing: {{exporter: otlp, endpoint: '{upstream}/v1/traces'}}\n"
        "gateway: {expose_graph: false, api_keys: {bench: '${BENCH_GATEWAY_KEY}'}}\n"
    )
    port = free_port()
    cmd = [sys.executable, "-c", "from flowopt.cli import main; main()", "serve", str(spec)]
    cmd += ["--port", str(port), "--workers", str(workers)]
    env = {**os.environ, "BENCH_GATEWAY_KEY": KEY}
    if src:
        env["PYTHONPATH"] = src
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    wait(url + "/health", proc)
    return url, proc


def _pids(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn's worker processes), from Linux ``/proc``."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        for kid in kids:
            out.extend(_pids(int(kid)))
    return out


def _cpu(proc: subprocess.Popen[bytes]) -> float:
    """User + system CPU seconds of ``proc`` and its children, each from its own
    ``/proc/<pid>/stat`` (no psutil needed)."""
    total = 0.0
    for pid in _pids(proc.pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def _one(s: aiohttp.ClientSession, url: str, body: bytes, stream: bool) -> float:
    """Seconds to the first content byte (streamed) or to the whole answer (JSON)."""
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    t0 = time.perf_counter()
    async with s.post(url + "/v1/chat/completions", data=body, headers=headers) as r:
        if r.status != 200:
            raise SystemExit(f"{url}: HTTP {r.status}: {await r.text()}")
        if not stream:
            await r.read()
            return time.perf_counter() - t0
        ttft = None
        async for chunk in r.content.iter_any():
            if ttft is None and b"hi " in chunk:
                ttft = time.perf_counter() - t0
        assert ttft is not None
        return ttft


def _ms(xs: list[float], q: int) -> float:
    return round((percentile(xs, q) or 0.0) * 1000, 3)


async def latency(
    targets: dict[str, str], procs: dict[str, Any], n: int, tokens: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as s:
        for stream in (True, False):
            body = _body(stream, tokens)
            for url in targets.values():
                for _ in range(10):
                    await _one(s, url, body, stream)
            got: dict[str, list[float]] = {k: [] for k in targets}
            cpu0 = {k: _cpu(p) for k, p in procs.items()}
            names = list(targets)
            for i in range(n):
                r = i % len(names)
                for k in names[r:] + names[:r]:  # rotate the order
                    got[k].append(await _one(s, targets[k], body, stream))
            cpu = {k: (_cpu(p) - cpu0[k]) / n * 1000 for k, p in procs.items()}
            d50, d99 = _ms(got["direct"], 50), _ms(got["direct"], 99)
            res: dict[str, Any] = {"direct_p50_ms": d50, "direct_p99_ms": d99}
            for k in names[1:]:
                res[f"{k}_added_p50_ms"] = round(_ms(got[k], 50) - d50, 3)
                res[f"{k}_added_p99_ms"] = round(_ms(got[k], 99) - d99, 3)
                res[f"{k}_cpu_ms_per_request"] = round(cpu[k], 3)
            for k in names[2:]:
                for m in ("added_p50_ms", "added_p99_ms", "cpu_ms_per_request"):
                    f = res[f"floor_{m}"]
                    res[f"ratio_{k}_vs_floor_{m}"] = (
                        round(res[f"{k}_{m}"] / f, 3) if f > 0 else None
                    )
            out["streamed" if stream else "json"] = res
    return out


async def _rps(url: str, concurrency: int, total: int, tokens: int) -> float:
    body = _body(True, tokens)
    left = total
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await _one(s, url, body, True)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - t0)


async def rps(
    targets: dict[str, str], concurrency: int, total: int, tokens: int, rounds: int
) -> dict[str, Any]:
    runs: dict[str, list[float]] = {k: [] for k in targets}
    for url in targets.values():  # warm each path
        await _rps(url, concurrency, concurrency * 2, tokens)
    names = list(targets)
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            runs[k].append(await _rps(targets[k], concurrency, total, tokens))
    res: dict[str, Any] = {"concurrency": concurrency, "requests_per_run": total}
    for k, xs in runs.items():
        res[f"{k}_rps"] = [round(x, 1) for x in xs]
    mean = {k: sum(xs) / len(xs) for k, xs in runs.items()}
    for k in names:
        if k not in ("direct", "floor"):
            res[f"ratio_{k}_vs_floor"] = round(mean[k] / mean["floor"], 3)
    res["ratio_floor_vs_direct"] = round(mean["floor"] / mean["direct"], 3)
    return res


async def run(args: Any, stub_url: str, work: Path, wait: Any) -> dict[str, Any]:
    floor_url, floor = start_floor(stub_url, wait)
    mw = args.middleware
    gw_url, gw = start_flowopt(stub_url, work, wait, middleware=mw)
    extra: list[subprocess.Popen[bytes]] = []
    try:
        targets = {"direct": stub_url, "floor": floor_url, "flowopt": gw_url}
        procs = {"floor": floor, "flowopt": gw}
        if args.baseline_src:
            base_url, base = start_flowopt(
                stub_url, work, wait, src=args.baseline_src, middleware=mw
            )
            extra.append(base)
            targets["flowopt_baseline"] = base_url
            procs["flowopt_baseline"] = base
        res: dict[str, Any] = {
            "latency": await latency(targets, procs, args.requests, args.stub_tokens),
            "rps_64": await rps(targets, 64, args.rps_requests, args.stub_tokens, args.rounds),
        }
        if args.workers > 1:
            url2, gw2 = start_flowopt(stub_url, work, wait, workers=args.workers, middleware=mw)
            extra.append(gw2)
            res[f"rps_64_workers_1_vs_{args.workers}"] = await rps(
                {"direct": stub_url, "floor": floor_url, "flowopt_w1": gw_url, "flowopt_wN": url2},
                64,
                args.rps_requests,
                args.stub_tokens,
                args.rounds,
            )
        return res
    finally:
        for p in (*extra, gw, floor):
            p.terminate()
            p.wait(10)
