"""Distil one narrow task from the strong model into SmolLM2-135M, on CPU, and measure it.

    FLOWOPT_STRONG_URL=http://127.0.0.1:8001 python examples/distill_recipe.py     # tiny run
    python examples/distill_recipe.py --data banking77-dev.jsonl --per-intent 50 \\
        --epochs 2 --json distill.json                                             # docs figures

The task: route a bank's support messages to one of eight labels (Banking77 intents). Why
this task: it is narrow, its answer is short (so training on two cores takes minutes), and
every message has a gold label, so "quality" is accuracy and not an opinion.

1. **Teacher**: every prompt runs as a flowopt batch job through the strong model
   (``FLOWOPT_STRONG_URL``, ``qwen0.5b``), with ``metadata={"distill": "allow"}``: the
   submitter's consent to use its answers.
2. **Export**: :func:`flowopt.distill.export` (``flowopt distill export``) turns the job's
   accepted answers into chat fine-tuning JSONL with a hash-chosen held-out split.
3. **Student**: SmolLM2-135M-Instruct (the bundled local model) answers the held-out
   prompts, is LoRA-tuned on the training split (``flowopt[distill]``: peft), and answers
   them again. Agreement with the teacher and accuracy against the gold labels, before and
   after, are printed (and written with ``--json``).

The defaults are a smoke run (32 prompts, a few steps): the figures in docs/distill.md come
from the second command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from flowopt.batch import run_file
from flowopt.distill import export
from flowopt.distill.lora import LoraSettings, load_jsonl, load_student
from flowopt.local.models import MODELS

ROOT = Path(__file__).resolve().parents[1]
STRONG_URL = os.environ.get("FLOWOPT_STRONG_URL", "http://127.0.0.1:8001").removesuffix("/v1")
STRONG_MODEL = os.environ.get("FLOWOPT_STRONG_MODEL", "qwen0.5b")
# Banking77 intent -> the short label the models answer with.
LABELS = {
    "card_arrival": "card_arrival",
    "lost_or_stolen_card": "lost_card",
    "exchange_rate": "exchange_rate",
    "pin_blocked": "pin_blocked",
    "request_refund": "refund",
    "terminate_account": "close_account",
    "age_limit": "age_limit",
    "apple_pay_or_google_pay": "mobile_pay",
}
SYSTEM = (
    "You route customer messages for a bank's support desk. Reply with exactly one label "
    "from this list and nothing else: " + ", ".join(LABELS.values()) + "."
)


def label_of(text: str) -> str:
    """The first label named in ``text`` (spaces and hyphens read as underscores)."""
    norm = text.lower().replace("-", "_").replace(" ", "_")
    found = [(norm.find(lab), lab) for lab in LABELS.values() if lab in norm]
    return min(found)[1] if found else "?"


def prompts(data: Path, per_intent: int) -> dict[str, str]:
    """Message -> gold label: the first ``per_intent`` messages of each intent."""
    taken: dict[str, int] = defaultdict(int)
    out: dict[str, str] = {}
    for line in data.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        label = LABELS.get(row["intent"])
        if label and taken[label] < per_intent and row["text"] not in out:
            taken[label] += 1
            out[row["text"]] = label
    return out


def teacher(messages: list[str], work: Path) -> float:
    """Answer every message through a flowopt batch job on the strong model; seconds."""
    spec = work / "teacher.yaml"
    spec.write_text(
        "name: distill-teacher\n"
        f"backend:\n  vllm: {{base_url: '{STRONG_URL}', model: '{STRONG_MODEL}'}}\n"
        "steps:\n  - {name: answer, prompt: '{input}'}\n"
    )
    lines = [
        json.dumps(
            {
                "custom_id": f"m{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": STRONG_MODEL,
                    "temperature": 0,
                    "max_tokens": 8,
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": text},
                    ],
                },
            }
        )
        for i, text in enumerate(messages)
    ]
    (work / "in.jsonl").write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    job = asyncio.run(
        run_file(
            spec,
            work / "in.jsonl",
            out=work / "out.jsonl",
            errors=work / "errors.jsonl",
            store=str(work / "jobs.sqlite"),
            metadata={"distill": "allow"},
        )
    )
    print(f"teacher: batch {job['status']}, {job['request_counts']}", file=sys.stderr)
    return time.perf_counter() - started


def share(a: list[str], b: list[str]) -> float:
    """The share of positions where ``a`` and ``b`` hold the same label."""
    return sum(x == y for x, y in zip(a, b, strict=True)) / max(len(a), 1)


def score(answers: list[str], teacher_labels: list[str], gold: list[str]) -> dict[str, float]:
    labels = [label_of(a) for a in answers]
    return {
        "agreement_with_teacher": share(labels, teacher_labels),
        "accuracy": share(labels, gold),
        "valid_label": sum(a != "?" for a in labels) / max(len(labels), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "tests/data/banking77-sample.jsonl")
    ap.add_argument("--per-intent", type=int, default=4)
    ap.add_argument("--holdout", type=float, default=0.25)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=0, help="0: every epoch in full")
    # One thread: on a shared machine two threads spin on each other (6x slower measured).
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()

    gold = prompts(args.data, args.per_intent)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        since = time.time() - 1
        teacher_s = teacher(list(gold), work)
        report = export(
            work / "train.jsonl",
            since=since,
            sources=[f"batch:{work / 'jobs.sqlite'}"],
            holdout=args.holdout,
            models=[STRONG_MODEL],
        )
        print(
            f"export: {report.train} train, {report.holdout} held out, "
            f"dropped {dict(report.dropped)}",
            file=sys.stderr,
        )
        train = load_jsonl(work / "train.jsonl")
        held = load_jsonl(work / "train.holdout.jsonl")
    held_prompts = [m[:-1] for m in held]
    held_teacher = [label_of(m[-1]["content"]) for m in held]
    held_gold = [gold.get(m[-2]["content"], "?") for m in held]
    train_teacher = [label_of(m[-1]["content"]) for m in train]
    train_gold = [gold.get(m[-2]["content"], "?") for m in train]

    student = load_student(MODELS["smollm2"].prepare(), threads=args.threads)
    started = time.perf_counter()
    before = student.generate(held_prompts, max_new_tokens=8)
    before_s = time.perf_counter() - started
    settings = LoraSettings(
        rank=args.rank,
        alpha=2 * args.rank,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        max_steps=args.max_steps,
    )
    trained = student.train(train, settings)
    after = student.generate(held_prompts, max_new_tokens=8)

    figures: dict[str, Any] = {
        "prompts": len(gold),
        "train": report.train,
        "held_out": report.holdout,
        "teacher_seconds": round(teacher_s, 1),
        "teacher_accuracy_train": share(train_teacher, train_gold),
        "teacher_accuracy_held_out": share(held_teacher, held_gold),
        "student_before": score(before, held_teacher, held_gold),
        "student_after": score(after, held_teacher, held_gold),
        "student_generate_seconds": round(before_s, 1),
        "training": {
            "examples": trained.examples,
            "steps": trained.steps,
            "epochs": args.epochs,
            "seconds": round(trained.seconds, 1),
            "first_loss": round(trained.first_loss, 3),
            "last_loss": round(trained.last_loss, 3),
            "trainable_params": trained.trainable_params,
            "threads": args.threads,
        },
        "examples": [
            {"prompt": p[-1]["content"], "teacher": t, "before": b, "after": a}
            for p, t, b, a in list(zip(held_prompts, held_teacher, before, after, strict=True))[:5]
        ],
    }
    print(json.dumps(figures, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if trained.steps == 0 or not held:
        print("nothing was trained or held out: raise --per-intent", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
