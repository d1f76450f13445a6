"""Triage and cascade against the real server, each tier behind its own fault proxy so the
traffic and the accounting of every tier can be checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowopt.cli import cli
from flowopt.routing.cascade import Cascade
from flowopt.routing.classifiers.embedding import EmbeddingRouter
from flowopt.routing.classifiers.judge import JudgeClassifier
from flowopt.routing.triage import Triage
from flowopt.testing import run_middleware_conformance
from flowopt.testing.faultproxy import Fault
from flowopt.types import Params, Request

from .conftest import TIERS

ONE_TIER_BACKEND = [{"name": "a", "backend": "default"}, {"name": "b", "backend": "default"}]


async def test_conformance() -> None:
    await run_middleware_conformance(lambda: Triage(tiers=ONE_TIER_BACKEND))
    await run_middleware_conformance(lambda: Cascade(tiers=ONE_TIER_BACKEND, threshold=0.0))


def _chat(text: str, **kw: object) -> Request:
    return Request.chat(text, params=Params(max_tokens=4, temperature=0), **kw)  # type: ignore[arg-type]


async def test_triage_rules_route_and_account(tiered, cheap_proxy, strong_proxy) -> None:
    pipe = tiered(
        [
            {
                "triage": {
                    "tiers": TIERS,
                    "classifier": {
                        "rules": {"rules": [{"pattern": r"\bprove\b", "then": "strong"}]}
                    },
                }
            }
        ]
    )
    easy = await pipe.acall(_chat("Say hi"))
    hard = await pipe.acall(_chat("Prove that 2 is prime"))
    assert cheap_proxy.count() == 1 and strong_proxy.count() == 1
    d_easy = next(d for d in easy.decisions if d.middleware == "triage")
    d_hard = next(d for d in hard.decisions if d.middleware == "triage")
    assert d_easy.detail["tier"] == "cheap" and d_hard.detail["tier"] == "strong"
    assert "pattern" in d_hard.detail["reason"]
    assert easy.cost is not None and 0 < easy.cost < d_easy.detail["strongest_cost"]
    assert hard.cost == pytest.approx(d_hard.detail["strongest_cost"])
    await pipe.aclose()


async def test_triage_streamed_response_is_costed(tiered, cheap_proxy) -> None:
    pipe = tiered([{"triage": {"tiers": TIERS}}])
    resp = await pipe.acall(_chat("Say hi", stream=True))
    final = await resp.complete()
    assert final.cost is not None and final.cost > 0
    assert any(d.middleware == "triage" and d.action == "routed" for d in final.decisions)
    await pipe.aclose()


async def test_cascade_accepts_confident_cheap_answer(tiered, cheap_proxy, strong_proxy) -> None:
    pipe = tiered([{"cascade": {"tiers": TIERS, "threshold": 0.0}}])
    resp = await pipe.acall(_chat("Say hi"))
    assert cheap_proxy.count() == 1 and strong_proxy.count() == 0
    d = next(d for d in resp.decisions if d.middleware == "cascade")
    assert d.action == "accepted" and d.detail["tier"] == "cheap"
    assert 0 <= d.detail["trail"][0]["confidence"] <= 1
    assert resp.logprobs is None  # asked for by the cascade, not by the caller
    assert resp.cost < d.detail["strongest_cost"]
    await pipe.aclose()


async def test_cascade_escalates_low_confidence_and_sums_cost(
    tiered, cheap_proxy, strong_proxy
) -> None:
    pipe = tiered([{"cascade": {"tiers": TIERS, "threshold": 1.0}}])
    resp = await pipe.acall(_chat("Say hi"))
    assert cheap_proxy.count() == 1 and strong_proxy.count() == 1
    d = next(d for d in resp.decisions if d.middleware == "cascade")
    assert d.action == "escalated" and d.detail["tier"] == "strong"
    assert d.detail["trail"][0]["accepted"] is False
    assert resp.cost == pytest.approx(d.detail["trail"][0]["cost"] + d.detail["strongest_cost"])
    await pipe.aclose()


async def test_cascade_escalates_when_cheap_tier_fails(tiered, cheap_proxy, strong_proxy) -> None:
    pipe = tiered([{"cascade": {"tiers": TIERS, "threshold": 0.0}}])
    cheap_proxy.set_default(Fault.status(503))
    resp = await pipe.acall(_chat("Say hi"))
    d = next(d for d in resp.decisions if d.middleware == "cascade")
    assert d.detail["trail"][0]["error"] == "flowopt.backend.http"
    assert strong_proxy.count() == 1 and resp.text
    await pipe.aclose()


@pytest.mark.parametrize("mode", ["buffer", "final"])
async def test_cascade_streaming_modes(mode, tiered, cheap_proxy, strong_proxy) -> None:
    pipe = tiered([{"cascade": {"tiers": TIERS, "threshold": 0.0, "stream": mode}}])
    resp = await pipe.acall(_chat("Say hi", stream=True))
    assert resp.stream is not None
    chunks = [c.text async for c in resp.stream]
    final = resp.stream.response
    assert final is not None and "".join(chunks) == final.text and final.cost is not None
    if mode == "buffer":  # cheap answer accepted, replayed
        assert cheap_proxy.count() == 1 and strong_proxy.count() == 0
    else:  # streamed live from the strongest tier, no cascade
        assert cheap_proxy.count() == 0 and strong_proxy.count() == 1
    await pipe.aclose()


async def test_llm_judge_uses_structured_choice(tiered, cheap_proxy) -> None:
    pipe = tiered([{"triage": {"tiers": TIERS, "classifier": {"judge": {"backend": "default"}}}}])
    resp = await pipe.acall(_chat("What is 2 + 2?"))
    d = next(d for d in resp.decisions if d.middleware == "triage")
    assert d.detail["classifier"] == "judge"
    assert "'easy'" in d.detail["reason"] or "'hard'" in d.detail["reason"]
    assert 0.0 <= d.detail["score"] <= 1.0
    assert cheap_proxy.count() >= 2  # the judge's call and (if cheap) the answer
    await pipe.aclose()


def test_judge_reads_p_hard_from_alternatives() -> None:
    import math

    from flowopt.types import TokenLogprob

    lps = (TokenLogprob("easy", math.log(0.7), (("easy", math.log(0.7)), ("hard", math.log(0.3)))),)
    assert JudgeClassifier.p_hard("easy", lps) == pytest.approx(0.3)


def test_embedding_router_train_eval_cli(tmp_path: Path, routing_rows) -> None:
    data = tmp_path / "slice.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in routing_rows))
    out = tmp_path / "router.npz"
    runner = CliRunner()
    r = runner.invoke(cli, ["triage", "train", str(data), "--out", str(out), "--k", "16"])
    assert r.exit_code == 0, r.output
    assert out.exists()
    router = EmbeddingRouter.load(out)
    s = router.score_texts(["What is 2+2?", routing_rows[0]["prompt"]])
    assert s.shape == (2,) and ((s >= 0) & (s <= 1)).all()
    r = runner.invoke(cli, ["triage", "eval", str(data), "--router", str(out), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)  # stderr carries the model-loading progress bar
    assert rep["all"]["n"] == rep["rows"] and "strong_share_at_95pct" in rep["all"]


def test_flowopt_run_json_prints_cost(tmp_path: Path, vllm_url: str, served_model: str) -> None:
    spec = tmp_path / "tri.yaml"
    spec.write_text(
        json.dumps(
            {
                "name": "tri",
                "backend": {"vllm": {"base_url": vllm_url, "model": served_model}},
                "backends": {"strong": {"vllm": {"base_url": vllm_url, "model": served_model}}},
                "middleware": [{"triage": {"tiers": TIERS}}],
                "steps": [
                    {
                        "name": "answer",
                        "prompt": "{input}",
                        "params": {"max_tokens": 4, "temperature": 0},
                    }
                ],
            }
        )
    )
    r = CliRunner().invoke(cli, ["run", str(spec), "--input", "Say hi", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["cost"] > 0
    d = next(d for d in out["decisions"] if d["middleware"] == "triage")
    assert d["strongest_cost"] >= out["cost"]
