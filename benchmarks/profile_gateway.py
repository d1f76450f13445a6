"""Profile ``flowopt serve`` under load from the instant stub: cProfile table + flame SVG.

    python benchmarks/profile_gateway.py --requests 2000 --svg docs/img/gateway_profile.svg

The gateway runs as its own process under cProfile (auth, metrics and OTLP spans on, as in
``benchmarks/gateway.py --floor``); this script sends sequential streamed requests, stops
the gateway with SIGINT (uvicorn shuts down cleanly, cProfile writes its file), prints the
functions by own time per request and draws an icicle graph (a flame graph drawn top-down)
from the pstats caller edges: each box's width is the time spent in it on that call path,
per request. No profiler beyond the standard library is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import pstats
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from _floor_compare import KEY, _body, _one

from flowopt.gateway._background import free_port
from gateway import _start_stub, _wait_http

Func = tuple[str, int, str]


def _name(f: Func) -> str:
    path, line, fn = f
    if path == "~":
        return fn
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{short}:{line}({fn})"


def icicle(raw: dict[Func, Any], out: Path, width: int = 1400) -> None:
    """An icicle SVG from per-request pstats caller edges (cumulative time on each edge),
    rooted at the event loop's callbacks (``Context.run`` / ``Handle._run``)."""
    children: dict[Func, list[tuple[Func, float]]] = {}
    for func, (_cc, _nc, _tt, _ct, callers) in raw.items():
        for caller, edge in callers.items():
            children.setdefault(caller, []).append((func, edge[3]))
    # roots: what the event loop calls (no Python caller on the per-request path)
    roots = [
        (f, v[3])
        for f, v in raw.items()
        if v[3] > 0 and not any(e[3] > 0 for e in v[4].values()) and "runners.py" not in f[0]
    ]
    total = sum(ct for _, ct in roots) or 1.0
    boxes: list[tuple[float, int, float, str, float]] = []
    row_h = 16

    def walk(func: Func, ct: float, x: float, depth: int, seen: frozenset[Func]) -> None:
        w = ct / total * width
        if w < 1.5 or depth > 60 or func in seen:
            return
        boxes.append((x, depth, w, _name(func), ct))
        cx = x
        for child, cct in sorted(children.get(func, []), key=lambda c: -c[1]):
            cct = min(cct, ct)
            walk(child, cct, cx, depth + 1, seen | {func})
            cx += cct / total * width

    x = 0.0
    for f, ct in sorted(roots, key=lambda r: -r[1]):
        walk(f, ct, x, 0, frozenset())
        x += ct / total * width
    depth = max((b[1] for b in boxes), default=0) + 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{depth * row_h + 30}"'
        ' font-family="monospace" font-size="10">',
        f'<text x="4" y="{depth * row_h + 20}">icicle of flowopt serve under cProfile; '
        f"total {total * 1e6:.0f} µs per request; hover a box for its µs</text>",
    ]
    for bx, d, w, name, ct in boxes:
        us = ct * 1e6
        hue = 20 + (hash(name) % 40)
        label = html.escape(name)
        parts.append(
            f'<g><title>{label} {us:.1f} µs/request</title><rect x="{bx:.1f}" y="{d * row_h}"'
            f' width="{w:.1f}" height="{row_h - 1}" fill="hsl({hue},80%,60%)"/>'
        )
        if w > 60:
            chars = int(w / 6)
            parts.append(
                f'<text x="{bx + 2:.1f}" y="{d * row_h + 11}">{html.escape(name[-chars:])}</text>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts) + "\n")


async def load(url: str, n: int, tokens: int) -> None:
    async with aiohttp.ClientSession() as s:
        body = _body(True, tokens)
        for _ in range(n):
            await _one(s, url, body, True)


def profile(stub_url: str, n: int, tokens: int, tmp: Path) -> dict[Func, Any]:
    """Raw pstats of a fresh ``flowopt serve`` process that answered ``n`` requests."""
    spec = tmp / "gw.yaml"
    spec.write_text(
        f"name: overhead\nbackend: {{vllm: {{base_url: '{stub_url}', model: stub}}}}\n"
        "middleware: [noop]\nsteps: [{name: a, prompt: '{input}'}]\n"
        f"tracing: {{exporter: otlp, endpoint: '{stub_url}/v1/traces'}}\n"
        "gateway: {expose_graph: false, api_keys: {bench: '${BENCH_GATEWAY_KEY}'}}\n"
    )
    prof = tmp / f"gw-{n}.prof"
    script = tmp / "serve.py"
    # CPU time, not wall time: on a busy machine a socket write that wakes the peer can be
    # descheduled mid-call, and a wall-clock profile charges that wait to the write.
    script.write_text(
        "import cProfile, sys, time\nfrom flowopt.cli import main\n"
        "out = sys.argv.pop(1)\np = cProfile.Profile(time.process_time)\np.enable()\n"
        "try:\n    main()\nfinally:\n    p.disable()\n    p.dump_stats(out)\n"
    )
    port = free_port()
    gw = subprocess.Popen(
        [sys.executable, str(script), str(prof), "serve", str(spec), "--port", str(port)],
        env={**os.environ, "BENCH_GATEWAY_KEY": KEY},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/health", gw)
        asyncio.run(load(url, n, tokens))
    finally:
        gw.send_signal(signal.SIGINT)
        gw.wait(30)
    return pstats.Stats(str(prof)).stats  # type: ignore[attr-defined,no-any-return]


def diff(big: dict[Func, Any], small: dict[Func, Any], per: int) -> dict[Func, Any]:
    """Per-request stats: (big run - small run) / extra requests; start-up cancels out."""
    out: dict[Func, Any] = {}
    zero: tuple[Any, ...] = (0, 0, 0.0, 0.0, {})
    for func, (cc, nc, tt, ct, callers) in big.items():
        s = small.get(func, zero)
        edges = {}
        for caller, e in callers.items():
            se = s[4].get(caller, (0, 0, 0.0, 0.0))
            edges[caller] = tuple((a - b) / per for a, b in zip(e, se, strict=True))
        out[func] = (
            (cc - s[0]) / per,
            (nc - s[1]) / per,
            (tt - s[2]) / per,
            (ct - s[3]) / per,
            edges,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000, help="extra requests of the big run")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--svg", default=None)
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    stub_url, stub = _start_stub(args.tokens)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            small = profile(stub_url, 100, args.tokens, Path(tmp))
            big = profile(stub_url, 100 + args.requests, args.tokens, Path(tmp))
    finally:
        stub.terminate()
        stub.wait(10)
    per = diff(big, small, args.requests)
    hot = [kv for kv in per.items() if kv[1][1] >= 0.5 and "runners.py" not in kv[0][0]]
    print(f"{'own µs/req':>10} {'cum µs/req':>10} {'calls/req':>9}  function")
    for func, (_cc, nc, tt, ct, _callers) in sorted(hot, key=lambda kv: -kv[1][2])[: args.top]:
        print(f"{tt * 1e6:10.1f} {ct * 1e6:10.1f} {nc:9.2f}  {_name(func)}")
    if args.svg:
        icicle(per, Path(args.svg))


if __name__ == "__main__":
    main()
