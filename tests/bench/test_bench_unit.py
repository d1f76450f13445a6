"""Bench logic without a server: statistics, knee and breaking point on synthetic curves,
workload sampling, and the offline HTML report."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from flowopt.bench import (
    SLO,
    BenchResult,
    LevelStats,
    Sample,
    VariantResult,
    breaking_point,
    faq_workload,
    find_knee,
    jsonl_workload,
    percentile,
    render_html,
    terminal_summary,
)
from flowopt.bench.stats import summarize
from flowopt.errors import ConfigError


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 95) == pytest.approx(95.0)


def test_knee_of_a_saturating_curve() -> None:
    # Throughput rises ~linearly to 8 concurrent, then flattens: the classic knee.
    loads = [1, 2, 4, 8, 16, 32, 64]
    tput = [40, 80, 155, 290, 310, 318, 320]
    assert find_knee(loads, tput) == 8


def test_knee_of_a_smooth_concave_curve() -> None:
    loads = [1, 2, 4, 8, 16, 32, 64, 128]
    tput = [100 * (1 - 2 ** (-x / 8)) for x in loads]  # 16 -> 32: +25%, 32 -> 64: +6%
    assert find_knee(loads, tput) == 32


def test_no_knee_while_still_linear_and_knee_before_a_collapse() -> None:
    assert find_knee([1, 2, 4, 8], [10, 20, 40, 80]) is None
    assert find_knee([1, 2], [10, 20]) is None
    # Rises, saturates at 4, then collapses: the knee ignores the fall after the peak.
    assert find_knee([1, 2, 4, 8, 16, 32], [40, 80, 150, 158, 160, 60]) == 4
    # Rises in proportion up to 16, then 32 buys nothing: the peak is the knee.
    assert find_knee([1, 2, 4, 8, 16, 32], [16, 31, 60, 77, 123, 117]) == 16


def _level(load: float, ok: int, total: int, tok_s: float) -> LevelStats:
    samples = [
        Sample(
            start=0.0,
            ok=i < ok,
            error=None if i < ok else "http_503",
            ttft=0.1,
            e2e=1.0,
            output_tokens=10,
        )
        for i in range(total)
    ]
    lv = summarize(f"c={load}", load, "concurrency", samples, 1.0, SLO())
    lv.output_tok_s = tok_s
    return lv


def test_breaking_point_by_errors_and_by_collapse() -> None:
    healthy = [_level(1, 10, 10, 40), _level(2, 10, 10, 80)]
    assert breaking_point(healthy) == (None, None)
    load, why = breaking_point([*healthy, _level(4, 9, 10, 90)])
    assert load == 4 and why is not None and "success rate" in why
    load, why = breaking_point([*healthy, _level(4, 10, 10, 50)])
    assert load == 4 and why is not None and "throughput fell" in why


def test_summary_goodput_and_error_kinds() -> None:
    fast = Sample(start=0, ok=True, ttft=0.05, e2e=0.5, output_tokens=11, itl=[0.04] * 10)
    slow = Sample(start=0, ok=True, ttft=0.9, e2e=2.0, output_tokens=11)
    failed = Sample(start=0, error="timeout", e2e=3.0)
    lv = summarize("x", 1, "concurrency", [fast, slow, failed], 2.0, SLO(ttft_ms=200))
    assert (lv.total, lv.succeeded, lv.errors) == (3, 2, {"timeout": 1})
    assert lv.goodput_req_s == 0.5 and lv.slo_attainment == pytest.approx(1 / 3, abs=1e-3)
    assert lv.output_tok_s == 11.0 and lv.tpot_ms["p50"] is not None
    assert lv.itl_ms["p50"] == pytest.approx(40.0)


def test_faq_workload_is_zipf_skewed_and_seeded() -> None:
    a = [p.intent for p in faq_workload(seed=3).take(2000)]
    b = [p.intent for p in faq_workload(seed=3).take(2000)]
    assert a == b
    counts = Counter(a)
    top_share = counts.most_common(1)[0][1] / len(a)
    assert top_share > 0.05  # uniform over 1000 intents would be 0.001
    assert len(counts) > 100  # ... with a long tail
    uniform = Counter(p.intent for p in faq_workload(seed=3, zipf_s=0).take(2000))
    assert uniform.most_common(1)[0][1] / 2000 < 0.01
    # Paraphrases: one intent comes in several phrasings.
    top = counts.most_common(1)[0][0]
    texts = {p.text for p in faq_workload(seed=1).take(3000) if p.intent == top}
    assert len(texts) >= 2


def test_jsonl_workload_reads_prompts_and_messages(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(
        json.dumps({"prompt": "hello"})
        + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": "hi"}]})
        + "\n"
    )
    wl = jsonl_workload(f, system="be brief")
    assert {p.text for p in wl.take(50)} == {"hello", "hi"}
    assert wl.sample().messages[0] == {"role": "system", "content": "be brief"}
    (tmp_path / "bad.jsonl").write_text('{"nope": 1}\n')
    with pytest.raises(ConfigError):
        jsonl_workload(tmp_path / "bad.jsonl")


def _synthetic_result() -> BenchResult:
    loads = [1, 2, 4, 8, 16]
    levels = []
    for c, tput in zip(loads, [40, 80, 150, 160, 162], strict=True):
        samples = [
            Sample(start=0.1 * i, ok=True, ttft=0.05 * c + 0.001 * i, e2e=0.5 * c, output_tokens=16)
            for i in range(20)
        ]
        lv = summarize(f"concurrency={c}", c, "concurrency", samples, 2.0, SLO(ttft_ms=300))
        lv.output_tok_s = tput
        levels.append(lv)
    return BenchResult(
        "http://x",
        "concurrency",
        {"name": "faq", "prompts": 3, "zipf_s": 1.1},
        {"max_tokens": 16, "concurrency": loads},
        [VariantResult("target", levels)],
        "2025-01-01T00:00:00+00:00",
        12.0,
    )


def test_report_renders_offline_with_plots_and_summary() -> None:
    res = _synthetic_result()
    doc = render_html(res)
    assert doc.count("<svg") >= 5  # throughput, req/s, TTFT, E2E, TTFT CDF
    assert not re.search(r"""(src|href)=["']https?://""", doc)  # nothing fetched: offline
    assert "<script" not in doc
    assert "knee ~4" in doc
    text = terminal_summary(res)
    assert "Knee: ~4 concurrent" in text and "TTFT p50/p95" in text
    data = json.loads(json.dumps(res.to_dict()))
    assert data["variants"][0]["knee"] == 4
    assert render_html(BenchResult.from_dict(data)) == doc  # JSON round-trips to the report
    assert data["variants"][0]["levels"][0]["ttft_ms"]["p99"] is not None
