"""Operating points, the fact-change rewrites used in training, and the facts the features
see (unit tests of pure logic; the shipped weights where a test names them)."""

from __future__ import annotations

from typing import Any

import pytest

from flowopt.cache._features import HAND_FEATURES, hand_features, text_info
from flowopt.cache._hard_negatives import KINDS, fact_changes
from flowopt.cache.config import CacheConfig
from flowopt.cache.verifier import OPERATING_POINTS, LearnedVerifier, threshold_for_precision
from flowopt.errors import ConfigError

CURVE = [[0.8, 0.2], [0.9, 0.5], [0.95, 0.8], [0.99, 0.97]]


def test_threshold_for_precision_takes_the_first_point_that_reaches_the_target() -> None:
    assert threshold_for_precision(CURVE, 0.9) == 0.5
    assert threshold_for_precision(CURVE, 0.91) == 0.8  # never a point below the target
    assert threshold_for_precision(CURVE, 0.5) == 0.2
    assert threshold_for_precision(CURVE, 0.999) == 0.97  # beyond calibration: strictest
    assert threshold_for_precision([], 0.9) == 1.0  # nothing recorded: serve nothing


def test_named_points_are_ordered_strict_to_lenient() -> None:
    v = LearnedVerifier()
    points = v.meta["operating_points"]
    assert set(OPERATING_POINTS) <= points.keys()
    assert points["strict"] >= points["default"] >= points["lenient"]
    assert LearnedVerifier(operating_point="strict").threshold == points["strict"]
    assert v.threshold == points["default"]


def test_target_precision_picks_a_recorded_threshold() -> None:
    v = LearnedVerifier(target_precision=0.9)
    curve = v.meta["calibration_curve"]
    assert v.threshold == threshold_for_precision(curve, 0.9)
    assert LearnedVerifier(target_precision=0.99).threshold >= v.threshold
    assert LearnedVerifier(threshold=0.5, target_precision=0.99).threshold == 0.5


def test_bad_operating_point_and_target_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="operating point"):
        LearnedVerifier(operating_point="fast")
    with pytest.raises(ConfigError):
        CacheConfig(target_precision=1.5)


def _features(a: str, b: str) -> dict[str, Any]:
    vals = hand_features(text_info(a), text_info(b), 0.9)
    return dict(zip(HAND_FEATURES, vals, strict=True))


def test_code_identifiers_are_entities() -> None:
    base = "The `to_pydict` method converts the Table to a dict."
    kept = "The Table class has a `to_pydict` method that turns it into a dict."
    swapped = "The `to_pylist` method converts the Table to a dict."
    assert "to_pydict" in text_info(base).entities
    assert _features(kept, base)["entity_mismatch"] == 0.0
    assert _features(swapped, base)["entity_mismatch"] == 1.0


TEXTS = [
    "The `nbytes` method returns the total number of bytes used by the Table.",
    "Audio files are decoded and resampled on the fly to 16 kHz by Datasets.",
    "You can load a dataset with `AudioFolder` if the data is not large.",
    "PyTorch users can call `set_format()` to return torch tensors from a Dataset.",
]


def test_fact_changes_change_one_fact_and_are_deterministic() -> None:
    out = fact_changes(TEXTS, seed=3)
    assert out == fact_changes(TEXTS, seed=3)
    assert out != fact_changes(TEXTS, seed=4)
    assert {k for _, k, _ in out} <= set(KINDS)
    for i, kind, new in out:
        assert new != TEXTS[i]
        if kind == "number":
            assert text_info(new).numbers != text_info(TEXTS[i]).numbers
        if kind == "negation":
            assert (" not " in new) != (" not " in TEXTS[i])
        if kind == "entity":
            assert text_info(new).entities != text_info(TEXTS[i]).entities
    assert all(sum(1 for j, *_ in out if j == i) <= 2 for i in range(len(TEXTS)))
