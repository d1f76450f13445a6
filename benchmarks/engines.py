"""Quantized serving: SmolLM2 as a 4-bit GGUF on llama.cpp vs as fp32 on vLLM-CPU, measured.

    python benchmarks/engines.py [--vllm URL] [--llamacpp URL] [--out docs/results/engines.json]

Both engines serve the same model (SmolLM2-135M-Instruct: vLLM the fp32 checkpoint
converted from the Q4_1 GGUF, llama.cpp the Q4_1 GGUF itself) and get the same prompts,
greedy. Without ``--vllm`` / ``--llamacpp`` the script starts a private server of each
(`flowopt backend up` / `--engine llamacpp` settings: 2048 context, every core) in a
temporary FLOWOPT_HOME, one after the other (never both at once), and stops it after.

Per engine:

* memory: RSS (and PSS, which counts shared pages once) summed over the server's process
  tree, idle after warm-up and again after the load below;
* TTFT: median time to the first streamed token of a ~70-token prompt, each one new (no
  prefix-cache hit beyond the chat template's system prompt; 5 requests, alone);
* single stream: output tokens/s of a 128-token generation (``min_tokens`` = ``max_tokens``
  so both generate the same count; median of 3), and the decode rate after the first token;
* 8 concurrent: total output tokens/s of 8 simultaneous 64-token streams, and their TTFT;
* quality: short factual/arithmetic questions, greedy, a whole-word match against accepted
  answers (``benchmarks/models_quality.py``'s 30 questions when present, else 20 here).

The last lines print llama.cpp / vLLM ratios of every figure. Never sends ``seed``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

MODEL = "smollm2"
SYSTEM = "Answer with only the answer: a number, a word or a short name. No explanation."
LONG_PROMPT = "Tell me a long story about a lighthouse keeper who finds a message in a bottle."
TTFT_PROMPT = (
    "You are a helpful assistant. Read the following note and summarise it in one line. "
    "Note: the weekly team meeting moves from Tuesday to Thursday at 10am in room 4B; "
    "bring the quarterly figures, the draft roadmap and your questions about the new "
    "deployment process, which starts next month."
)

QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Italy?", ("rome",)),
    ("Which is the largest planet in the solar system?", ("jupiter",)),
    ("What is the chemical symbol for gold?", ("au",)),
    ("How many days are in a week?", ("7", "seven")),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("At what temperature in Celsius does water boil at sea level?", ("100",)),
    ("What is 7 + 5?", ("12", "twelve")),
    ("What is 9 * 8?", ("72",)),
    ("What is 15 - 7?", ("8", "eight")),
    ("What is 100 / 4?", ("25",)),
    ("How many legs does a spider have?", ("8", "eight")),
    ("Which gas do plants absorb from the air for photosynthesis?", ("carbon dioxide", "co2")),
    ("Which is the largest ocean on Earth?", ("pacific",)),
    ("Who painted the Mona Lisa?", ("da vinci", "leonardo")),
    ("What is the opposite of hot?", ("cold",)),
    ("How many minutes are in an hour?", ("60", "sixty")),
    ("Which language is mainly spoken in Brazil?", ("portuguese",)),
    ("Which chemical element has the symbol O?", ("oxygen",)),
]
EVAL_NAME = "benchmarks/engines.py (20 questions)"
try:  # the shared eval of the model-quality benchmark, when this checkout has it
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from models_quality import QUESTIONS as _SHARED  # type: ignore[import-not-found]

    QUESTIONS, EVAL_NAME = list(_SHARED), f"benchmarks/models_quality.py ({len(_SHARED)} questions)"
except ImportError:
    pass


def correct(answer: str, accepted: tuple[str, ...]) -> bool:
    text = answer.lower()
    return any(re.search(rf"(?<![\w.]){re.escape(a)}(?![\w]|\.\d)", text) for a in accepted)


# -- memory of a server's process tree (Linux /proc) ---------------------------------------
def _listener_pid(port: int) -> int | None:
    """The pid of the process listening on 127.0.0.1:``port`` (from /proc/net/tcp)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "0A":  # LISTEN
                    inodes.add(f"socket:[{f[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(proc.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_memory_mb(port: int) -> dict[str, float]:
    pid = _listener_pid(port)
    if pid is None:
        return {"rss_mb": float("nan"), "pss_mb": float("nan")}
    # The listener may be a child of the process we started (vLLM's API server is the
    # group leader itself); walk up to the session leader to take the whole server.
    with contextlib.suppress(OSError):
        sid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
        if Path(f"/proc/{sid}").exists():
            pid = sid
    rss = pss = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return {"rss_mb": rss / 1024, "pss_mb": pss / 1024}


# -- requests -------------------------------------------------------------------------------
async def stream_one(
    client: httpx.AsyncClient, messages: list[dict[str, str]], **params: Any
) -> dict[str, Any]:
    body = {"model": MODEL, "messages": messages, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, **params}  # fmt: skip
    started = time.perf_counter()
    first = last = None
    usage: dict[str, Any] = {}
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = first if first is not None else now
                    last = now
    done = time.perf_counter()
    tokens = int(usage.get("completion_tokens") or 0)
    assert first is not None and last is not None and tokens, f"no tokens/usage: {usage}"
    return {
        "ttft_s": first - started,
        "total_s": done - started,
        "tokens": tokens,
        "decode_tps": (tokens - 1) / (last - first) if last > first else float("nan"),
    }


async def measure(base_url: str, *, port: int, quick: bool = False) -> dict[str, Any]:
    user = lambda q: [{"role": "user", "content": q}]  # noqa: E731
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as c:
        await stream_one(c, user("Hi"), max_tokens=4)  # warm-up
        idle = tree_memory_mb(port)
        # A different opening each time: no engine may serve the prompt from its prefix cache.
        ttft = [
            await stream_one(c, user(f"Note {i}. {TTFT_PROMPT}"), max_tokens=1)
            for i in range(3 if quick else 5)
        ]
        single = [
            await stream_one(c, user(LONG_PROMPT), max_tokens=128, min_tokens=128)
            for _ in range(1 if quick else 3)
        ]
        started = time.perf_counter()
        conc = await asyncio.gather(
            *(
                stream_one(c, user(f"{LONG_PROMPT} ({i})"), max_tokens=64, min_tokens=64)
                for i in range(8)
            )
        )
        wall = time.perf_counter() - started
        loaded = tree_memory_mb(port)
        rows = []
        for question, accepted in QUESTIONS:
            body = {"model": MODEL, "temperature": 0, "max_tokens": 16,
                    "messages": [{"role": "system", "content": SYSTEM},
                                 {"role": "user", "content": question}]}  # fmt: skip
            resp = await c.post("/v1/chat/completions", json=body)
            resp.raise_for_status()
            answer = resp.json()["choices"][0]["message"]["content"] or ""
            rows.append({"question": question, "answer": answer, "ok": correct(answer, accepted)})
    return {
        "base_url": base_url,
        "load_average_1m": os.getloadavg()[0],
        "rss_idle_mb": idle["rss_mb"],
        "pss_idle_mb": idle["pss_mb"],
        "rss_loaded_mb": loaded["rss_mb"],
        "ttft_ms": statistics.median(r["ttft_s"] for r in ttft) * 1000,
        "single_tps": statistics.median(r["tokens"] / r["total_s"] for r in single),
        "single_decode_tps": statistics.median(r["decode_tps"] for r in single),
        "concurrent8_tps": sum(r["tokens"] for r in conc) / wall,
        "concurrent8_ttft_p50_ms": statistics.median(r["ttft_s"] for r in conc) * 1000,
        "concurrent8_ttft_max_ms": max(r["ttft_s"] for r in conc) * 1000,
        "accuracy": sum(r["ok"] for r in rows) / len(rows),
        "correct": sum(r["ok"] for r in rows),
        "questions": len(rows),
        "rows": rows,
    }


# -- servers ----------------------------------------------------------------------------------
@contextlib.contextmanager
def server(
    engine: str, url: str | None, home: Path, threads: int | None = None
) -> Iterator[tuple[str, int]]:
    if url:
        url = url.rstrip("/").removesuffix("/v1")
        yield url, int(url.rsplit(":", 1)[1])
        return
    from flowopt.local.models import resolve_model
    from flowopt.local.server import LocalServer, ServerConfig, find_free_port

    port = find_free_port()
    mgr: LocalServer
    if engine == "llamacpp":
        from flowopt.local.llamacpp import LlamaCppConfig, LlamaCppServer

        mgr = LlamaCppServer(port, home=home)
        state = mgr.start(LlamaCppConfig(model=MODEL, port=port, threads=threads), timeout=120)
    else:
        checkpoint = resolve_model(MODEL)  # converted once, in the normal flowopt home
        mgr = LocalServer(port, home=home)
        state = mgr.start(
            ServerConfig(model=str(checkpoint), port=port, served_name=MODEL), timeout=600
        )
    print(f"[{engine}] started at {state.base_url} (pid {state.pid})", file=sys.stderr)
    try:
        yield state.base_url, port
    finally:
        mgr.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--vllm", default=None, help="a running vLLM server (default: start one)")
    parser.add_argument("--llamacpp", default=None, help="a running llama.cpp server")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument(
        "--llamacpp-threads", type=int, default=None, help="llama.cpp threads (default: all cores)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every answer")
    args = parser.parse_args()

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="flowopt-engines-") as tmp:
        for engine, url in (("llamacpp", args.llamacpp), ("vllm", args.vllm)):
            threads = args.llamacpp_threads if engine == "llamacpp" else None
            with server(engine, url, Path(tmp) / engine, threads) as (base_url, port):
                results[engine] = asyncio.run(measure(base_url, port=port, quick=args.quick))
    results["eval"] = EVAL_NAME
    results["cores"] = len(os.sched_getaffinity(0))
    results["llamacpp_threads"] = args.llamacpp_threads or results["cores"]

    print(
        f"\nSmolLM2-135M-Instruct, {results['cores']} cores (llama.cpp threads "
        f"{results['llamacpp_threads']}), eval: {EVAL_NAME}; load average at the end: "
        f"llama.cpp {results['llamacpp']['load_average_1m']:.1f}, "
        f"vLLM {results['vllm']['load_average_1m']:.1f}"
    )
    head = f"{'':28}{'llama.cpp Q4_1':>16}{'vLLM fp32':>12}{'ratio':>9}"
    print(head)
    figures = [
        ("RSS idle (MB)", "rss_idle_mb", "{:.0f}"),
        ("PSS idle (MB)", "pss_idle_mb", "{:.0f}"),
        ("RSS after load (MB)", "rss_loaded_mb", "{:.0f}"),
        ("TTFT alone (ms)", "ttft_ms", "{:.0f}"),
        ("1 stream tok/s", "single_tps", "{:.1f}"),
        ("1 stream decode tok/s", "single_decode_tps", "{:.1f}"),
        ("8 concurrent tok/s", "concurrent8_tps", "{:.1f}"),
        ("8 concurrent TTFT p50 (ms)", "concurrent8_ttft_p50_ms", "{:.0f}"),
        ("8 concurrent TTFT max (ms)", "concurrent8_ttft_max_ms", "{:.0f}"),
        ("accuracy", "accuracy", "{:.0%}"),
    ]
    lc, vl = results["llamacpp"], results["vllm"]
    for label, key, fmt in figures:
        ratio = lc[key] / vl[key] if vl[key] else float("nan")
        print(f"{label:28}{fmt.format(lc[key]):>16}{fmt.format(vl[key]):>12}{ratio:>8.2f}x")
    if args.verbose:
        for engine in ("llamacpp", "vllm"):
            for row in results[engine]["rows"]:
                mark = "ok " if row["ok"] else "BAD"
                print(f"  [{engine}] {mark} {row['question']!r} -> {row['answer']!r}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
