"""TF-IDF + logistic regression: trained with scikit-learn, served with numpy alone.

Why not pickle the scikit-learn pipeline: a model file named in a spec would then run
arbitrary code when loaded, and serving would need scikit-learn. Training exports the
vocabulary, idf weights and coefficients to an ``.npz`` (loaded with
``allow_pickle=False``); inference re-implements the few steps it needs (scikit-learn's
default word tokenizer, 1-2 grams, sublinear tf, l2 norm, softmax) exactly.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from flowopt.errors import ConfigError, MissingDependencyError

__all__ = ["TfidfModel", "fit"]

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_FORMAT = 1


def _terms(text: str) -> list[str]:
    words = _TOKEN.findall(text.lower())
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


class TfidfModel:
    """A trained classifier; :meth:`proba` gives a probability per class."""

    def __init__(
        self,
        vocab: Sequence[str],
        idf: npt.NDArray[np.float64],
        coef: npt.NDArray[np.float64],
        intercept: npt.NDArray[np.float64],
        classes: Sequence[str],
    ) -> None:
        self.index = {t: i for i, t in enumerate(vocab)}
        self.idf = idf
        self.coef = coef
        self.intercept = intercept
        self.classes = list(classes)

    def proba(self, text: str) -> npt.NDArray[np.float64]:
        counts = Counter(i for t in _terms(text) if (i := self.index.get(t)) is not None)
        scores = self.intercept.copy()
        if counts:
            cols = np.fromiter(counts.keys(), dtype=np.int64)
            tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64))
            x = tf * self.idf[cols]
            x /= np.linalg.norm(x)
            scores = scores + self.coef[:, cols] @ x
        if len(self.classes) == 2 and scores.shape[0] == 1:
            p1 = 1.0 / (1.0 + np.exp(-scores[0]))
            return np.array([1.0 - p1, p1])
        e = np.exp(scores - scores.max())
        return e / e.sum()  # type: ignore[no-any-return]

    def save(self, path: str | Path) -> None:
        vocab = sorted(self.index, key=self.index.__getitem__)
        np.savez_compressed(
            path,
            format=np.array(_FORMAT),
            vocab=np.array(vocab, dtype=str),
            idf=self.idf,
            coef=self.coef,
            intercept=self.intercept,
            classes=np.array(self.classes, dtype=str),
        )

    @classmethod
    def load(cls, path: str | Path) -> TfidfModel:
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["format"]) != _FORMAT:
                    raise ConfigError(
                        f"guesser model {path} has format {int(z['format'])}, not {_FORMAT}",
                        hint="retrain it with `flowopt speculate train`",
                    )
                return cls(
                    [str(v) for v in z["vocab"]],
                    z["idf"],
                    z["coef"],
                    z["intercept"],
                    [str(c) for c in z["classes"]],
                )
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(
                f"cannot read guesser model {path}: {exc}",
                hint="point 'model' at a file written by `flowopt speculate train`",
            ) from None


def fit(texts: Sequence[str], labels: Sequence[str], *, c: float = 10.0) -> TfidfModel:
    """Train on ``texts`` -> ``labels`` (needs scikit-learn: the ``speculate`` extra)."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise MissingDependencyError("sklearn", "speculate", "training a TF-IDF guesser") from None
    if len(set(labels)) < 2:
        raise ConfigError(
            f"a guesser needs at least two labels to learn; got {sorted(set(labels))}",
            hint="train on data covering the step's label set",
        )
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x = vec.fit_transform(texts)
    clf = LogisticRegression(C=c, max_iter=1000)
    clf.fit(x, list(labels))
    vocab = [""] * len(vec.vocabulary_)
    for term, i in vec.vocabulary_.items():
        vocab[i] = term
    return TfidfModel(
        vocab,
        np.asarray(vec.idf_, dtype=np.float64),
        np.asarray(clf.coef_, dtype=np.float64),
        np.asarray(clf.intercept_, dtype=np.float64),
        [str(c) for c in clf.classes_],
    )
