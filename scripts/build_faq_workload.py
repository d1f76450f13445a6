"""Build flowopt's packaged FAQ workload from QQP duplicate pairs.

    python scripts/build_faq_workload.py --source PATH/TO/qqp-pairs-dev.jsonl

Why this shape: an FAQ-style service sees a few popular questions very often and a long
tail rarely (Zipf), and the same question arrives in different words (paraphrases). QQP's
duplicate labels link paraphrases; connected components of the duplicate graph are
"intents". We keep intents with at least two phrasings, cap each at 8 phrasings, and
write up to ``--intents`` of them (largest first, ties broken by a seeded shuffle) to
``src/flowopt/data/faq_workload.jsonl`` as ``{"id": n, "questions": [...]}``. The Zipf
popularity is applied at sampling time (``flowopt.bench.workload``), so one file serves
any skew. Deterministic: the same source and seed give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--source",
        default=os.environ.get("FLOWOPT_QQP_PAIRS"),
        help="the QQP dev pairs file (default: $FLOWOPT_QQP_PAIRS; required)",
    )
    ap.add_argument("--out", default=str(REPO / "src/flowopt/data/faq_workload.jsonl"))
    ap.add_argument("--intents", type=int, default=1000)
    ap.add_argument("--max-phrasings", type=int, default=8)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    if args.source is None:
        ap.error(
            "pass --source PATH (the QQP dev pairs file, qqp-pairs-dev.jsonl: 20,000 labelled "
            "pairs, not in this repository) or set FLOWOPT_QQP_PAIRS; "
            "tests/data/qqp-sample.jsonl holds only 100 of them, enough for tests, not here"
        )

    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    with open(args.source, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("duplicate") != 1:
                continue
            a, b = row["a"].strip(), row["b"].strip()
            if a and b and a != b and len(a) < 200 and len(b) < 200:
                parent[find(a)] = find(b)

    groups: dict[str, list[str]] = {}
    for q in parent:
        groups.setdefault(find(q), []).append(q)
    rng = random.Random(args.seed)
    intents = [sorted(set(g)) for g in groups.values() if len(set(g)) >= 2]
    rng.shuffle(intents)
    intents.sort(key=len, reverse=True)
    intents = intents[: args.intents]
    rng.shuffle(intents)  # rank (popularity) must not follow group size
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for i, qs in enumerate(intents):
            rng.shuffle(qs)
            f.write(
                json.dumps({"id": i, "questions": qs[: args.max_phrasings]}, ensure_ascii=False)
                + "\n"
            )
    total = sum(min(len(q), args.max_phrasings) for q in intents)
    print(f"wrote {len(intents)} intents, {total} questions, {out.stat().st_size} bytes -> {out}")


if __name__ == "__main__":
    main()
