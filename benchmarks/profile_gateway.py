"""Profile ``flowopt serve`` under load from the instant stub: cProfile table + flame SVG.

    python benchmarks/profile_gateway.py --requests 2000 --svg docs/img/gateway_profile.svg
    python benchmarks/profile_gateway.py --json --sort cum   # JSON answers, by cumulative time

The gateway runs as its own process under cProfile (auth, metrics and OTLP spans on, as in
``benchmarks/gateway.py --floor``); this script sends sequential streamed (``--json``: JSON)
requests, stops the gateway with SIGINT (uvicorn shuts down cleanly, cProfile writes its
file), prints the functions by own (``--sort cum``: cumulative) time per request, then
the request's own time by part (:data:`GROUPS`: spans, engine answer decode...), and
draws an icicle graph (a flame graph drawn top-down) from the pstats caller edges: each
box's width is the time spent in it on that call path, per request. No profiler beyond
the standard library is needed.
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
        if v[3] > 0
        and not _outer(f)
        and not any(e[3] > 0 and not _outer(c) for c, e in v[4].items())
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


async def load(url: str, n: int, tokens: int, stream: bool) -> None:
    async with aiohttp.ClientSession() as s:
        body = _body(stream, tokens)
        for _ in range(n):
            await _one(s, url, body, stream)


def profile(stub_url: str, n: int, tokens: int, tmp: Path, stream: bool) -> dict[Func, Any]:
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
        asyncio.run(load(url, n, tokens, stream))
    finally:
        gw.send_signal(signal.SIGINT)
        gw.wait(30)
    return pstats.Stats(str(prof)).stats  # type: ignore[attr-defined,no-any-return]


# What each part of a request is for, by the file its code is in (first match wins).
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("spans", ("opentelemetry", "flowopt/tracing.py", "gateway/tracing.py", "_span_scope.py")),
    (
        "HTTP client to the engine (native or aiohttp)",
        ("backends/_h1", "backends/http.py", "aiohttp", "multidict", "yarl"),
    ),
    (
        "engine answer decode",
        ("backends/_vllm_stream", "backends/_openai_wire", "stream.py", "backends/"),
    ),
    (
        "HTTP server (uvicorn, httptools)",
        ("uvicorn", "httptools", "gateway/_protocol", "starlette"),
    ),
    (
        "request read + parse + auth",
        (
            "gateway/_body",
            "gateway/_wire",
            "gateway/_fields",
            "gateway/auth",
            "gateway/models",
            "flowopt/types.py",
            "flowopt/messages.py",
        ),
    ),
    ("answer encode", ("gateway/_answers", "gateway/_json", "flowopt/_answer")),
    ("exchange, disconnect, app", ("gateway/app.py", "gateway/_events", "gateway/_disconnect")),
    ("middleware stack", ("middleware/", "flowopt/pipeline.py")),
    ("metrics", ("prometheus_client", "gateway/metrics.py")),
    ("event loop", ("asyncio", "uvloop")),
]


# The process's outer synchronous frames (the CLI, uvicorn.run, asyncio.run): they span
# the whole serve, so after the two runs are subtracted they would hold every request's
# time a second time; the icicle starts below them, at the event loop's callbacks.
_OUTER = (
    "runners.py",
    "click/",
    "flowopt/cli/",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "uvicorn/main.py",
    "gateway/server.py",
    "serve.py",
    "<string>",
)


def _outer(f: Func) -> bool:
    return any(k in f[0] for k in _OUTER)


def _group(f: Func) -> str | None:
    return next((name for name, keys in GROUPS if any(k in f[0] for k in keys)), None)


def groups(per: dict[Func, Any]) -> dict[str, float]:
    """Own time per request by :data:`GROUPS`; a builtin's or another library's own time
    is charged to its callers' groups, in proportion to each caller edge's time."""
    out: dict[str, float] = {}
    for func, (_cc, _nc, tt, _ct, callers) in per.items():
        if "runners.py" in func[0] or tt <= 0:
            continue
        group = _group(func)
        edges = {c: max(e[3], 0.0) for c, e in callers.items()}
        if group is None and sum(edges.values()) > 0:
            total = sum(edges.values())
            for caller, t in edges.items():
                g = _group(caller) or "other"
                out[g] = out.get(g, 0.0) + tt * t / total
            continue
        out[group or "other"] = out.get(group or "other", 0.0) + tt
    return out


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
    ap.add_argument("--json", action="store_true", help="JSON answers instead of streamed")
    ap.add_argument(
        "--sort", choices=("own", "cum"), default="own", help="order the table by own or cum"
    )
    args = ap.parse_args()
    stub_url, stub = _start_stub(args.tokens)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stream = not args.json
            small = profile(stub_url, 100, args.tokens, Path(tmp), stream)
            big = profile(stub_url, 100 + args.requests, args.tokens, Path(tmp), stream)
    finally:
        stub.terminate()
        stub.wait(10)
    per = diff(big, small, args.requests)
    hot = [kv for kv in per.items() if kv[1][1] >= 0.5 and "runners.py" not in kv[0][0]]
    print(f"{'own µs/req':>10} {'cum µs/req':>10} {'calls/req':>9}  function")
    col = 2 if args.sort == "own" else 3
    for func, (_cc, nc, tt, ct, _callers) in sorted(hot, key=lambda kv: -kv[1][col])[: args.top]:
        print(f"{tt * 1e6:10.1f} {ct * 1e6:10.1f} {nc:9.2f}  {_name(func)}")
    by_group = groups(per)
    total = sum(by_group.values()) or 1.0
    print(f"\n{'own µs/req':>10} {'share':>6}  part (total {total * 1e6:.0f} µs/request)")
    for name, t in sorted(by_group.items(), key=lambda kv: -kv[1]):
        print(f"{t * 1e6:10.0f} {t / total:6.1%}  {name}")
    if args.svg:
        icicle(per, Path(args.svg))


if __name__ == "__main__":
    main()
