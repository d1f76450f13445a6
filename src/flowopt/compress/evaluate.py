"""``flowopt compress eval``: what compression keeps, measured through the middleware.

Reads a file in the format of the NQ-20 or KV-75 dev sets (lost-in-the-middle; see
docs/compression.md), builds each prompt the way a RAG step would (system prompt, the
passages marked compressible, the question last) and sends it through the real
:class:`~flowopt.compress.Compress` middleware (``when: always``, so every ratio is
measured; the middleware may still decline content it cannot compress safely). Reports per
target ratio: the achieved ratio (all prompts, declined ones at 1x), **answer survival** (a
gold answer string is still in the prompt the server would get: no model needed), the
compressor's own latency, the declines, a breakdown by gold-passage position, and, with a
model, QA accuracy on the full and the compressed prompt (greedy, same decoding; a
normalised gold answer inside the normalised output).
"""

from __future__ import annotations

import ast
import gzip
import json
import re
import statistics
import string
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowopt.compress.marks import mark
from flowopt.compress.middleware import Compress
from flowopt.compress.scorer import Scorer
from flowopt.errors import ConfigError
from flowopt.middleware.base import CallNext
from flowopt.types import Message, Params, Request, Response

__all__ = ["build_request", "evaluate", "load_rows", "normalize"]

SYSTEM = (
    "Write a high-quality answer for the given question using only the provided search "
    "results (some of which might be irrelevant). Answer with a short phrase."
)


def load_rows(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a ``.jsonl`` or ``.jsonl.gz`` file (the first ``limit``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no data file at {p}", hint="pass --data FILE.jsonl[.gz]")
    opener: Any = gzip.open if p.suffix == ".gz" else open
    rows: list[dict[str, Any]] = []
    with opener(p, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"{p}:{n} is not JSON ({exc.msg})", hint="one object a line"
                ) from None
            if limit is not None and len(rows) >= limit:
                break
    return rows


def _field(row: dict[str, Any], key: str) -> Any:
    value = row[key]
    if isinstance(value, str) and value[:1] in "[{":  # some exports keep lists as repr
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def build_request(row: dict[str, Any]) -> tuple[Request, list[str], int | None]:
    """The marked request for one row, its gold answers and the gold position (NQ)."""
    if "ctxs" in row:
        ctxs = _field(row, "ctxs")
        passages = [
            f"Document [{i + 1}](Title: {c.get('title', '')}) {c['text']}"
            for i, c in enumerate(ctxs)
        ]
        question = str(row["question"])
        answers = [str(a) for a in _field(row, "answers")]
        position: int | None = int(row.get("gold_position", -1))
    elif "ordered_kv_records" in row:
        records = _field(row, "ordered_kv_records")
        passages = [json.dumps(dict(records), indent=1)]
        question = f'Key: "{row["key"]}"\nCorresponding value:'
        answers = [str(row["value"])]
        position = None
    else:
        raise ConfigError(
            "a row has neither 'ctxs' (NQ-20 format) nor 'ordered_kv_records' (KV-75 format)",
            hint="see docs/compression.md for the file formats",
        )
    body = "\n\n".join(passages)
    user = f"Search results:\n\n{body}\n\nQuestion: {question}\nAnswer:"
    req = Request(
        messages=(Message("system", SYSTEM), Message("user", user)),
        params=Params(temperature=0.0, max_tokens=32),
    )
    return mark(req, passages, question=question), answers, position


def normalize(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().replace("\xa0", " ")
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _correct(output: str, answers: Sequence[str]) -> bool:
    out = normalize(output)
    return any(normalize(a) and normalize(a) in out for a in answers)


class _Capture:
    """The terminal of the survival pass: keeps the request the server would get."""

    def __init__(self) -> None:
        self.last: Request | None = None

    async def __call__(self, request: Request) -> Response:
        self.last = request
        return Response(text="", model="capture")


async def evaluate(
    rows: list[dict[str, Any]],
    ratios: Sequence[float],
    *,
    scorer: Scorer | None = None,
    answer: CallNext | None = None,
) -> dict[str, Any]:
    """Measure each ratio over ``rows``; ``answer``: a terminal that asks a real model."""
    built = [build_request(r) for r in rows]
    out: dict[str, Any] = {"n": len(rows), "ratios": []}
    full_correct: list[bool] | None = None
    if answer is not None:
        full_correct = []
        for req, answers, _ in built:
            full_correct.append(_correct((await answer(req)).text, answers))
        out["qa_accuracy_full"] = sum(full_correct) / max(1, len(full_correct))
    shared_scorer = scorer
    for ratio in ratios:
        mw = Compress(scorer=shared_scorer, when="always", ratio=ratio, max_model_len=None)
        shared_scorer = mw.scorer  # one loaded model for every ratio
        before = after = 0
        survived: list[bool] = []
        declined = 0
        millis: list[float] = []
        by_pos: dict[int, list[bool]] = defaultdict(list)
        correct: list[bool] = []
        for req, answers, position in built:
            capture = _Capture()
            started = time.perf_counter()
            resp = await mw(req, capture)
            elapsed = (time.perf_counter() - started) * 1000.0
            d = next(x for x in resp.decisions if x.middleware == "compress")
            sent = capture.last
            assert sent is not None
            tb = int(d.detail["tokens_before"])
            before += tb
            after += int(d.detail.get("tokens_after", tb)) if d.action == "compressed" else tb
            declined += d.action != "compressed"
            millis.append(float(d.detail.get("compress_ms", elapsed)))
            context = sent.messages[-1].text.rsplit("\n\nQuestion:", 1)[0]
            ok = any(a in context for a in answers)
            survived.append(ok)
            if position is not None:
                by_pos[position].append(ok)
            if answer is not None:
                correct.append(_correct((await answer(sent)).text, answers))
        entry: dict[str, Any] = {
            "target_ratio": ratio,
            "achieved_ratio": round(before / max(1, after), 3),
            "answer_survival": round(sum(survived) / max(1, len(survived)), 4),
            "declined": declined,
            "compress_ms_mean": round(statistics.fmean(millis), 1) if millis else 0.0,
            "compress_ms_p50": round(statistics.median(millis), 1) if millis else 0.0,
            "tokens_before": before,
            "tokens_after": after,
        }
        if by_pos:
            entry["survival_by_gold_position"] = {
                str(p): round(sum(v) / len(v), 3) for p, v in sorted(by_pos.items())
            }
        if answer is not None:
            entry["qa_accuracy_compressed"] = round(sum(correct) / max(1, len(correct)), 4)
            entry["qa_accuracy_full"] = out["qa_accuracy_full"]
        out["ratios"].append(entry)
    if out["ratios"]:
        first = out["ratios"][0]
        out["achieved_ratio"] = first["achieved_ratio"]
        out["answer_survival"] = first["answer_survival"]
        if answer is not None:
            out["qa_accuracy_compressed"] = first["qa_accuracy_compressed"]
    return out
