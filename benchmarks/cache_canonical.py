#!/usr/bin/env python
"""Would a canonical form before keying serve paraphrases from the exact tier?

    python benchmarks/cache_canonical.py --pairs /tmp/flowopt-qqp-holdout.jsonl \
        --pairs /tmp/flowopt-paraphrase-holdout.jsonl

One of the seeds' ideas for cache recall: normalise a question (case, punctuation,
contractions, and optionally a few modal/question-word synonyms) and key the exact tier on
that. For each pairs file this prints how many pairs the canonical key would serve, how
many of them are duplicates, and the recall, against verbatim equality. Measured result
(docs/cache.md, "What was tried"): it serves ~1% of QQP duplicates at ~80% precision and no
plain paraphrase, so it is not shipped.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

CONTRACTIONS = {
    "what's": "what is",
    "how's": "how is",
    "i'm": "i am",
    "can't": "cannot",
    "don't": "do not",
    "it's": "it is",
    "isn't": "is not",
    "doesn't": "does not",
    "won't": "will not",
    "i've": "i have",
    "you're": "you are",
}
SYNONYMS = {"can": "do", "could": "do", "would": "do", "should": "do", "ways": "way"}


def canonical(text: str, synonyms: bool) -> str:
    t = text.lower()
    for k, v in CONTRACTIONS.items():
        t = t.replace(k, v)
    words = re.sub(r"[^\w\s]", " ", t).split()
    if synonyms:
        words = [SYNONYMS.get(w, w) for w in words]
    return " ".join(words)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--pairs", type=Path, action="append", required=True)
    args = ap.parse_args()
    report = []
    for path in args.pairs:
        rows = [json.loads(line) for line in path.open() if line.strip()]
        dups = sum(int(r["duplicate"]) for r in rows)
        for mode in ("verbatim", "canonical", "canonical+synonyms"):
            if mode == "verbatim":
                served = [r for r in rows if r["a"] == r["b"]]
            else:
                syn = mode.endswith("synonyms")
                served = [r for r in rows if canonical(r["a"], syn) == canonical(r["b"], syn)]
            tp = sum(int(r["duplicate"]) for r in served)
            report.append(
                {
                    "pairs": path.name,
                    "key": mode,
                    "served": len(served),
                    "precision": round(tp / len(served), 3) if served else None,
                    "recall": round(tp / max(1, dups), 4),
                }
            )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
