"""The compress middleware with its real parts: LLMLingua's PromptCompressor over the
converted SmolLM2-135M checkpoint as the scorer, the real NQ-20 / KV-75 samples in
tests/data, and the real local vLLM server counting the prompt tokens it was sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowopt.backends.vllm import VLLMBackend
from flowopt.cli import cli
from flowopt.compress import Compress, LLMLinguaScorer, select
from flowopt.compress.evaluate import build_request, evaluate, load_rows
from flowopt.middleware.base import build_stack, traced_backend

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def scorer() -> LLMLinguaScorer:
    s = LLMLinguaScorer()
    s.compressor()  # load once: tiktoken seeded offline, SmolLM2 on the CPU
    return s


def test_real_scorer_keeps_protected_spans(scorer: LLMLinguaScorer) -> None:
    text = (
        "The quarterly report was prepared by the finance team after a long review of the "
        "accounts, and it was sent to https://intranet.example.com/reports/q3 on 2024-10-02. "
        "Revenue grew to $4,512,300 while costs stayed flat; the ticket INV-7731 tracks the "
        'open item, and the summary record is {"region": "north", "units": 1200}. '
    ) * 4
    sel = select(scorer, [text], ratio=3.0)
    out = sel.passages[0] or ""
    assert sel.ratio > 1.5
    for keep in (
        "https://intranet.example.com/reports/q3",
        "2024-10-02",
        "$4,512,300",
        "INV-7731",
        '{"region": "north", "units": 1200}',
    ):
        assert keep in out


def test_eval_cli_reports_survival_on_nq(scorer: LLMLinguaScorer) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "compress",
            "eval",
            "--data",
            str(DATA / "nq20-sample.jsonl"),
            "--ratio",
            "3",
            "--limit",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["n"] == 2
    assert out["achieved_ratio"] >= 2.5
    assert out["answer_survival"] >= 0.5
    (entry,) = out["ratios"]
    assert entry["declined"] == 0 and entry["compress_ms_p50"] > 0
    assert set(entry["survival_by_gold_position"]) <= {str(p) for p in range(20)}


async def test_key_value_prompts_are_declined_never_lost(scorer: LLMLinguaScorer) -> None:
    rows = load_rows(DATA / "kv75-sample.jsonl", limit=2)
    out = await evaluate(rows, [4.0], scorer=scorer)
    assert out["answer_survival"] == 1.0
    assert out["ratios"][0]["declined"] == 2


async def test_the_server_is_sent_fewer_tokens(
    scorer: LLMLinguaScorer, vllm_url: str, served_model: str
) -> None:
    (row,) = load_rows(DATA / "nq20-sample.jsonl", limit=1)
    row["ctxs"] = row["ctxs"][:8]  # ~1,100 tokens: inside SmolLM2's 2,048-token window
    req, _, _ = build_request(row)
    backend = VLLMBackend(vllm_url, model=served_model)
    try:
        terminal = traced_backend(backend, name="vllm")
        full = await build_stack([("compress", Compress(scorer=scorer, when="never"))], terminal)(
            req
        )
        small = await build_stack(
            [("compress", Compress(scorer=scorer, when="always", ratio=3.0))], terminal
        )(req.replace(request_id="compressed"))
    finally:
        await backend.aclose()
    (d,) = [d for d in small.decisions if d.middleware == "compress"]
    assert d.action == "compressed"
    assert full.usage.input_tokens > 1.8 * small.usage.input_tokens
    assert small.text.strip()
