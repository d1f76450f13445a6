"""Pure functions of routing: prices, rules, confidence, evaluation curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flowopt.errors import ConfigError
from flowopt.routing.classifiers.rules import RulesClassifier
from flowopt.routing.confidence import confidence
from flowopt.routing.evaluate import Example, curve, split, summarize
from flowopt.routing.pricing import Price, parse_tiers
from flowopt.types import Request, TokenLogprob, Usage


def test_price_per_token_and_gpu_second() -> None:
    p = Price(input_per_1k=1.0, output_per_1k=2.0, per_gpu_second=0.5, cached_input_per_1k=0.1)
    u = Usage(input_tokens=1000, output_tokens=500, cached_input_tokens=200)
    assert p.cost(u, latency_ms=2000) == pytest.approx(0.8 + 0.02 + 1.0 + 1.0)


def test_tiers_need_two_and_known_keys() -> None:
    with pytest.raises(ConfigError):
        parse_tiers([{"name": "only"}])
    with pytest.raises(ConfigError):
        parse_tiers([{"name": "a", "cost": 1}, {"name": "b"}])
    t = parse_tiers({"small": {"backend": "default"}, "large": {}})
    assert [x.backend for x in t] == ["default", "large"]


def test_rules_first_match_and_metadata() -> None:
    rc = RulesClassifier(
        [{"pattern": r"\bprove\b", "then": "strong"}, {"max_chars": 20, "then": 0.1}],
        default_score=0.6,
    )
    assert rc.classify_sync(Request.chat("Please prove it")).tier == "strong"
    assert rc.classify_sync(Request.chat("hi")).score == 0.1
    assert rc.classify_sync(Request.chat("a longer question without rules")).score == 0.6
    assert rc.classify_sync(Request.chat("x", metadata={"tier": "cheap"})).tier == "cheap"
    with pytest.raises(ConfigError):
        RulesClassifier([{"pattern": "(", "then": 1}])


def test_confidence_methods() -> None:
    lps = (TokenLogprob("A", math.log(0.9)), TokenLogprob(" is", math.log(0.4)))
    assert confidence(lps, "first") == pytest.approx(0.9)
    assert confidence(lps, "min") == pytest.approx(0.4)
    assert confidence(lps, "mean") == pytest.approx(math.sqrt(0.36))
    assert confidence(None) is None


def test_curve_perfect_router_and_split_is_stable() -> None:
    weak = np.array([1, 1, 0, 0], dtype=float)
    strong = np.array([1, 1, 1, 0], dtype=float)
    scores = 1 - weak  # perfect: send the weak model's misses to strong
    c = curve(scores, weak, strong, points=5)
    assert c[0]["quality"] == 0.5 and c[1]["quality"] == 0.75
    s = summarize(scores, weak, strong)
    assert s["strong_share_at_100pct"] <= 0.5 and s["apgr"] > 0.5
    ex = [Example(str(i), "p", 1, 1, "b") for i in range(200)]
    a, b = split(ex, 0.3, 0)
    assert len(a) + len(b) == 200 and split(ex, 0.3, 0)[1] == b and 30 < len(b) < 90


def test_price_from_throughput_is_machine_time_per_token() -> None:
    # $0.36/h is $0.0001/s; at 100 output tok/s a token takes 1/100 s of the machine
    p = Price.from_throughput(0.36, 100.0)
    assert p.output_per_1k == pytest.approx(0.001)
    assert p.input_per_1k == pytest.approx(0.00025)  # default ratio 0.25
    q = Price.from_throughput(0.36, 100.0, input_tokens_per_s=400.0)
    assert q.input_per_1k == pytest.approx(0.00025)
    # a call costs the machine time it used: 200 prompt tokens + 50 output tokens
    u = Usage(input_tokens=200, output_tokens=50)
    assert q.cost(u) == pytest.approx(0.0001 * (200 / 400 + 50 / 100))
    with pytest.raises(ConfigError):
        Price.from_throughput(0.36, 0.0)
