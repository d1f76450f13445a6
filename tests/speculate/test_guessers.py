"""The built-in guessers: the numpy TF-IDF matches scikit-learn's own probabilities,
round-trips through its file, and the lookup guesser learns what A returned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowopt import ConfigError
from flowopt.speculate import LookupGuesser, TfidfGuesser
from flowopt.speculate._tfidf import TfidfModel, fit

TEXTS = [
    "I want a refund for my order",
    "refund me please, the charge was wrong",
    "why was my card charged twice",
    "the app crashes when I open it",
    "cannot log in, the screen is blank",
    "the website shows an error page",
]
LABELS = ["billing", "billing", "billing", "tech", "tech", "tech"]


def test_numpy_inference_matches_scikit_learn(tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    model = fit(TEXTS, LABELS)
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(TEXTS)
    clf = LogisticRegression(C=10.0, max_iter=1000).fit(vec.transform(TEXTS), LABELS)
    probe = ["my refund never came", "the app shows an error", "hello there"]
    expected = clf.predict_proba(vec.transform(probe))
    got = np.array([model.proba(t) for t in probe])
    assert np.allclose(got, expected, atol=1e-9)
    model.save(tmp_path / "m.npz")
    guesser = TfidfGuesser(str(tmp_path / "m.npz"))
    best = guesser.guess("please refund the charge", ["billing", "tech"], 2)
    assert [g.label for g in best] == ["billing", "tech"] and best[0].confidence > 0.5
    assert [g.label for g in guesser.guess("refund", ["tech"], 1)] == ["tech"]


def test_a_bad_model_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="flowopt speculate train"):
        TfidfModel.load(bad)


def test_lookup_learns_and_normalises() -> None:
    g = LookupGuesser(max_entries=2)
    assert g.guess("Refund me!", ["billing"], 1) == []
    g.observe("Refund me!", "billing")
    [guess] = g.guess("refund   me", ["billing", "tech"], 1)
    assert guess.label == "billing" and guess.confidence == pytest.approx(2 / 3)
    g.observe("a", "tech")
    g.observe("b", "tech")  # the oldest entry goes
    assert g.guess("refund me", ["billing"], 1) == []
