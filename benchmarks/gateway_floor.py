"""The floor: a feature-free pass-through proxy, what "a gateway" costs before any feature.

    python benchmarks/gateway_floor.py --port 8098 --upstream http://127.0.0.1:8099

Raw ASGI on uvicorn (uvloop + httptools) that relays request and response bytes through
one shared aiohttp session, parsing and checking nothing: no auth, no limits, no metrics,
no spans, no error shapes. It lives in ``benchmarks/`` and is never shipped; it exists so
``benchmarks/gateway.py --floor`` can report flowopt's cost as a ratio to it, measured in
the same run with requests interleaved, instead of as an absolute figure that moves with
the machine.
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp

_session: aiohttp.ClientSession | None = None


def make_app(upstream: str) -> Any:
    upstream = upstream.rstrip("/")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        global _session
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        if _session is None:
            _session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
            )
        async with _session.request(
            scope["method"],
            upstream + scope["path"],
            data=body or None,
            headers={"content-type": "application/json"},
        ) as r:
            ctype = r.headers.get("content-type", "application/json").encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": r.status,
                    "headers": [(b"content-type", ctype)],
                }
            )
            async for chunk in r.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    args = ap.parse_args()
    uvicorn.run(
        make_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
