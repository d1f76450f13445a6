"""``flowopt memory eval``: evidence recall@K and recall latency through the middleware.

What it measures, and why this way:

- Each conversation's sessions are fed in order through :meth:`MemoryMiddleware.observe`
  (the call the middleware makes after each answer), extraction runs in the middleware's
  own background worker as in production, and the eval waits for the queue to drain.
  Assistant turns are not fed: by policy they never become memories.
- Each question goes through :meth:`MemoryMiddleware.recall_into`, the code that runs
  before every call, timed there (``recall_ms``), so the latency is the production one.
- **Evidence recall@K**: the share of questions whose evidence turn ids are all among the
  provenance (source turns) of the K recalled memories.
- **Baseline, raw turns**: the same question over the raw turns themselves (MiniLM cosine,
  top K, no extraction), the thing memory extraction must beat.

The file format (one conversation a line) is in docs/memory.md.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from flowopt.backends.vllm import VLLMBackend
from flowopt.errors import ConfigError
from flowopt.memory._answers import JUDGE_PROMPT, answer_and_judge
from flowopt.memory.extract import Turn
from flowopt.memory.middleware import MemoryMiddleware
from flowopt.memory.store import MemoryKey
from flowopt.types import Request

__all__ = ["evaluate", "load_conversations"]

_NOT_FACTS = {"assistant", "system", "tool"}


def load_conversations(path: str | Path) -> list[dict[str, Any]]:
    """Read and check the file; a bad line is a ConfigError naming the line and field."""
    out: list[dict[str, Any]] = []
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"{path}: no such file", hint="pass a .jsonl file, one conversation a line"
        )
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            conv = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{where}: not JSON ({exc})", hint="one JSON object a line") from None
        for field in ("id", "sessions", "questions"):
            if field not in conv:
                raise ConfigError(
                    f"{where}: conversation has no {field!r}",
                    hint='{"id", "speakers", "sessions": [{"id", "date", "turns": [{"id", '
                    '"speaker", "text"}]}], "questions": [{"question", "answer", "evidence"}]}',
                )
        for s in conv["sessions"]:
            for t in s.get("turns", []):
                if not {"id", "speaker", "text"} <= set(t):
                    raise ConfigError(
                        f"{where}: a turn of session {s.get('id')!r} lacks id/speaker/text",
                        hint='turns are {"id", "speaker", "text"}',
                    )
        out.append(conv)
    return out


def _accuracy(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cond in ("memory", "full_history"):
        got = [r["answers"][cond] for r in rows if "answers" in r]
        if got:
            out[cond] = {
                "judge_accuracy": sum(g["judge"] for g in got) / len(got),
                "lexical_accuracy": sum(g["lexical"] for g in got) / len(got),
                "prompt_tokens_mean": statistics.fmean(g["prompt_tokens"] for g in got),
            }
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return float(np.percentile(np.array(values), q))


def _turns(conv: dict[str, Any]) -> list[list[Turn]]:
    return [
        [
            Turn(str(t["id"]), str(t["speaker"]), str(t["text"]), s.get("date"))
            for t in s.get("turns", [])
            if str(t["speaker"]).lower() not in _NOT_FACTS
        ]
        for s in conv["sessions"]
    ]


def _user_id(conv: dict[str, Any]) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(conv["id"])) or "conv"


async def evaluate(
    conversations: list[dict[str, Any]],
    *,
    k: int = 10,
    llm_base_url: str,
    llm_model: str,
    data_dir: str | None = None,
    chunk_turns: int = 6,
    extractor: str = "compact",
    answers: bool = False,
    window_chars: int = 12_000,
    episodic: bool = False,
) -> dict[str, Any]:
    """Run the eval (see the module docstring) and return the report as a dict."""
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="flowopt-memory-eval-")
        data_dir = tmp.name
    mw = MemoryMiddleware(
        long_term=True,
        data_dir=data_dir,
        llm_base_url=llm_base_url,
        llm_model=llm_model,
        top_k=k,
        recall_tokens=100_000,
        min_score=0.0,
        recall_timeout_s=30.0,
        debounce_s=0.0,
        extractor=extractor,
        episodic=episodic,
    )
    await mw.setup()
    assert mw.store is not None and mw.queue is not None
    backend = VLLMBackend(llm_base_url, model=llm_model) if answers else None
    try:
        t0 = time.perf_counter()
        n_turns = 0
        for conv in conversations:
            key = MemoryKey("eval", user=_user_id(conv))
            for si, session in enumerate(_turns(conv)):
                for ci in range(0, len(session), chunk_turns):
                    chunk = session[ci : ci + chunk_turns]
                    n_turns += len(chunk)
                    mw.observe(key, chunk, conversation=f"{key.scope}#{si}.{ci}")
        mw.queue.drain()
        extract_s = time.perf_counter() - t0
        embed = mw.store.open().embedding_model.langchain_model.inner
        hits = base_hits = 0
        latencies: list[float] = []
        injected: list[int] = []
        per_q: list[dict[str, Any]] = []
        n_mem = 0
        at_k: dict[int, list[int]] = {kk: [0, 0] for kk in {1, 3, 5, k} if kk <= k}
        for conv in conversations:
            key = MemoryKey("eval", user=_user_id(conv))
            sources = {m.id: set(m.sources) for m in mw.store.memories(key)}
            n_mem += len(sources)
            raw = [t for session in _turns(conv) for t in session]
            raw_vecs = embed.embed_many([t.text for t in raw]) if raw else None
            for q in conv["questions"]:
                evidence = {str(e) for e in q.get("evidence", [])}
                req = Request.chat(
                    [
                        {"role": "system", "content": "Answer briefly."},
                        {"role": "user", "content": q["question"]},
                    ],
                    tenant="eval",
                    user=key.user,
                )
                detail: dict[str, Any] = {}
                await mw.recall_into(req, key, detail)
                latencies.append(detail["recall_ms"])
                injected.append(detail["tokens_injected"])
                ranked = [sources.get(mid, set()) for mid in detail["memory_ids"][:k]]
                order: list[str] = []
                if raw_vecs is not None:
                    sims = raw_vecs @ embed.embed(q["question"])
                    order = [raw[j].id for j in np.argsort(-sims)[:k]]
                for kk in sorted({1, 3, 5, k}):
                    if kk > k:
                        continue
                    got_k = set().union(*ranked[:kk]) if ranked[:kk] else set()
                    at_k[kk][0] += bool(evidence) and evidence <= got_k
                    at_k[kk][1] += bool(evidence) and evidence <= set(order[:kk])
                hit = bool(evidence) and evidence <= set().union(*ranked) if ranked else False
                base = bool(evidence) and evidence <= set(order)
                hits += hit
                base_hits += base
                row = {
                    "conversation": conv["id"],
                    "question": q["question"],
                    "hit": hit,
                    "raw_turns_hit": base,
                    "category": q.get("category"),
                }
                if backend is not None:
                    row["answers"] = await answer_and_judge(
                        mw, backend, conv, q, str(key.user), window_chars=window_chars
                    )
                per_q.append(row)
        n = len(per_q)
        report: dict[str, Any] = {}
        if backend is not None:
            report["answers"] = _accuracy(per_q)
            report["judge_prompt"] = JUDGE_PROMPT
        return report | {
            "k": k,
            "questions": n,
            "conversations": len(conversations),
            "extractor": extractor,
            "episodic": episodic,
            "evidence_recall_at_k": hits / n if n else 0.0,
            "baseline_raw_turns_recall_at_k": base_hits / n if n else 0.0,
            "evidence_recall_at": {str(kk): v[0] / n for kk, v in sorted(at_k.items())}
            if n
            else {},
            "baseline_raw_turns_recall_at": {str(kk): v[1] / n for kk, v in sorted(at_k.items())}
            if n
            else {},
            "recall_latency_p50_ms": _pct(latencies, 50),
            "recall_latency_p95_ms": _pct(latencies, 95),
            "tokens_injected_mean": statistics.fmean(injected) if injected else 0.0,
            "memories_stored": n_mem,
            "turns_fed": n_turns,
            "extraction_s": extract_s,
            "extraction_turns_per_s": n_turns / extract_s if extract_s > 0 else 0.0,
            "per_question": per_q,
        }
    finally:
        if backend is not None:
            await backend.aclose()
        await mw.aclose()
        if tmp is not None:
            tmp.cleanup()
