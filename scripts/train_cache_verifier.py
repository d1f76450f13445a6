#!/usr/bin/env python
"""Train the semantic cache's verifier on the dev pairs file, reproducibly.

    python scripts/train_cache_verifier.py --pairs PATH/TO/qqp-pairs-dev.jsonl

What it does (seeded end to end; the same inputs give the same weights):

1. Reads the pairs file and splits it with ``--seed``: ``--holdout`` (default 20%) is set
   aside and never used for fitting or for choosing thresholds; the rest is split again
   into *fit* (85%) and *calibration* (15%).
2. Embeds every question with the runtime embedder (:class:`MiniLMEmbedder`; cached in
   ``--embeddings`` so a re-run skips it) and builds :func:`pair_vector` rows, both
   orientations of each fit pair so the model is symmetric.
3. Fits gradient-boosted trees (scikit-learn's histogram GBM, training-time only; ``--model
   mlp`` for a small MLP instead) and stores them flattened into arrays, with the
   operating thresholds, in ``src/flowopt/data/cache_verifier.npz``.
   Thresholds are chosen on the calibration split: ``p95``/``p99`` are the lowest
   probabilities whose served hits reach that precision, ``default`` is ``p95``.
4. Writes the held-out pairs to ``--holdout-out`` so the numbers can be re-measured through
   the middleware's own code path: ``flowopt cache eval --pairs <that file>``, and prints
   the held-out pairwise metrics.

Only the dev file is used. Runtime inference needs numpy only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from flowopt.cache._features import HAND_FEATURES, pair_matrix  # noqa: E402
from flowopt.cache.embedder import MiniLMEmbedder  # noqa: E402


def load_pairs(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def embed_texts(texts: list[str], cache: Path) -> np.ndarray:
    """MiniLM vectors of ``texts`` (cached in ``cache`` under a digest of the texts)."""
    digest = hashlib.blake2b("\n".join(texts).encode(), digest_size=8).hexdigest()
    if cache.exists():
        with np.load(cache) as data:
            if str(data["digest"]) == digest:
                return np.asarray(data["v"])
    emb = MiniLMEmbedder(threads=max(1, (os.cpu_count() or 2) // 2))
    t0 = time.perf_counter()
    vecs = emb.embed_many(texts)
    print(f"embedded {len(texts)} texts in {time.perf_counter() - t0:.0f} s")
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, v=vecs, digest=digest)
    return vecs


def embed_all(rows: list[dict[str, Any]], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of every row's ``a`` and ``b`` (unique texts embedded once)."""
    texts = sorted({r["a"] for r in rows} | {r["b"] for r in rows})
    vecs = embed_texts(texts, cache)
    index = {t: i for i, t in enumerate(texts)}
    return (
        vecs[[index[r["a"]] for r in rows]],
        vecs[[index[r["b"]] for r in rows]],
    )


def curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall when serving every pair scoring >= each threshold."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(labels[order])
    served = np.arange(1, len(order) + 1)
    return scores[order], tp / served, tp / max(1, int(labels.sum()))


def threshold_for(scores: np.ndarray, labels: np.ndarray, precision: float) -> float:
    """The lowest threshold whose served hits still reach ``precision``."""
    th, prec, _ = curve(scores, labels)
    ok = np.where(prec >= precision)[0]
    if len(ok) == 0:
        return 1.0
    i = int(ok.max())
    return float(th[i])


def summarise(
    scores: np.ndarray, labels: np.ndarray, thresholds: dict[str, float]
) -> dict[str, Any]:
    _, prec, rec = curve(scores, labels)
    out: dict[str, Any] = {}
    for r in (0.3, 0.5):
        m = rec >= r
        out[f"precision_at_recall_{int(r * 100)}"] = (
            round(float(prec[m].max()), 4) if m.any() else 0.0
        )
    for p in (0.95, 0.99):
        m = prec >= p
        out[f"recall_at_precision_{int(p * 100)}"] = (
            round(float(rec[m].max()), 4) if m.any() else 0.0
        )
    for name, t in thresholds.items():
        served = scores >= t
        tp = int((served & (labels == 1)).sum())
        n = int(served.sum())
        out[f"at_{name}"] = {
            "threshold": round(t, 4),
            "precision": round(tp / n, 4) if n else None,
            "recall": round(tp / max(1, int(labels.sum())), 4),
            "false_hits_per_1k": round(1000 * (n - tp) / len(labels), 2),
        }
    return out


PRECISIONS = (0.90, 0.95, 0.97, 0.98, 0.99)
"""Calibration precisions recorded as ``pNN`` operating points."""

NAMED = {"lenient": "p90", "default": "p95", "strict": "p99"}
"""The named operating points and the calibrated precision each one stands for."""


def calibration_curve(scores: np.ndarray, labels: np.ndarray) -> list[list[float]]:
    """``[precision, threshold]`` pairs for precision targets 0.80..0.995: what a user's
    ``target_precision`` is looked up in."""
    out = []
    for target in np.round(np.arange(0.80, 0.996, 0.005), 3):
        out.append([float(target), threshold_for(scores, labels, float(target))])
    return out


def paraphrase_sets(args: argparse.Namespace, rows_of: list[dict[str, Any]]) -> dict[str, Any]:
    """Fit rows from the plain-paraphrase dev file: its pairs as positives (both ways) and
    fact-changing rewrites of them as negatives; a seeded third of it is held out."""
    from flowopt.cache._hard_negatives import fact_changes

    rng = np.random.default_rng(args.seed + 1)
    idx = rng.permutation(len(rows_of))
    n_hold = int(len(rows_of) * args.paraphrase_holdout)
    hold, fit = idx[:n_hold], idx[n_hold:]
    with args.paraphrase_holdout_out.open("w") as fh:
        for i in hold:
            fh.write(json.dumps(rows_of[i]) + "\n")
    changes = fact_changes([r["b"] for r in rows_of], seed=args.seed)
    texts = sorted({r["a"] for r in rows_of} | {r["b"] for r in rows_of} | {c for *_, c in changes})
    vecs = embed_texts(texts, args.embeddings.with_name("paraphrases-dev-embeddings.npz"))
    index = {t: i for i, t in enumerate(texts)}

    def mat(queries: list[str], cached: list[str]) -> np.ndarray:
        qv = vecs[[index[t] for t in queries]]
        cv = vecs[[index[t] for t in cached]]
        return pair_matrix(queries, cached, qv, cv)

    fit_set = set(int(i) for i in fit)
    a = [r["a"] for r in rows_of]
    b = [r["b"] for r in rows_of]
    pos = mat([b[i] for i in fit], [a[i] for i in fit])
    pos_rev = mat([a[i] for i in fit], [b[i] for i in fit])
    neg_fit = [(i, c) for i, _, c in changes if i in fit_set]
    neg_hold = [(i, c) for i, _, c in changes if i not in fit_set]
    neg = mat([c for _, c in neg_fit], [a[i] for i, _ in neg_fit])
    x_fit = np.vstack([pos, pos_rev, neg])
    y_fit = np.concatenate([np.ones(2 * len(pos)), np.zeros(len(neg))])
    return {
        "x_fit": x_fit,
        "y_fit": y_fit,
        "x_fit_pos": pos,
        "x_hold": mat([b[i] for i in hold], [a[i] for i in hold]),
        "x_hold_neg": mat([c for _, c in neg_hold], [a[i] for i, _ in neg_hold]),
        "split": {
            "fit": len(fit),
            "holdout": len(hold),
            "fact_changes_fit": len(neg_fit),
            "fact_changes_holdout": len(neg_hold),
        },
    }


MONOTONIC = {
    "cos": 1,
    "cos_sq": 1,
    "token_jaccard": 1,
    "content_jaccard": 1,
    "trigram_jaccard": 1,
    "negation_mismatch": -1,
    "number_mismatch": -1,
    "entity_mismatch": -1,
    "antonym": -1,
    "swap": -1,
    "unmatched_digit": -1,
}
"""Direction each interpretable feature may move the probability (``--monotonic``)."""


def fit_gbm(
    x: np.ndarray, y: np.ndarray, args: argparse.Namespace, weight: np.ndarray
) -> tuple[dict[str, np.ndarray], Any]:
    """Histogram GBM, flattened into arrays the runtime walks with numpy."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    monotonic = None
    if args.monotonic:
        # More similarity never lowers the probability, a changed fact never raises it:
        # the shape a rule would have, which keeps the trees from memorising pairs.
        signs = {name: sign for name, sign in MONOTONIC.items() if name in HAND_FEATURES}
        monotonic = [signs.get(name, 0) for name in HAND_FEATURES]
        monotonic += [0] * (x.shape[1] - len(monotonic))
    model = HistGradientBoostingClassifier(
        max_iter=args.trees,
        learning_rate=args.learning_rate,
        max_leaf_nodes=args.leaves,
        min_samples_leaf=args.min_leaf,
        l2_regularization=args.l2,
        monotonic_cst=monotonic,
        early_stopping=False,
        random_state=args.seed,
    ).fit(x, y, sample_weight=weight)
    feature, threshold, left, right, leaf, value, roots = [], [], [], [], [], [], []
    depth = 0
    offset = 0
    for (pred,) in model._predictors:
        nodes = pred.nodes
        roots.append(offset)
        feature.append(nodes["feature_idx"])
        threshold.append(nodes["num_threshold"])
        left.append(nodes["left"].astype(np.int64) + offset)
        right.append(nodes["right"].astype(np.int64) + offset)
        leaf.append(nodes["is_leaf"].astype(bool))
        value.append(np.where(nodes["is_leaf"] == 1, nodes["value"], 0.0))
        depth = max(depth, int(nodes["depth"].max()))
        offset += len(nodes)
    arrays = {
        "t_feature": np.concatenate(feature).astype(np.int32),
        "t_threshold": np.concatenate(threshold).astype(np.float64),
        "t_left": np.concatenate(left).astype(np.int32),
        "t_right": np.concatenate(right).astype(np.int32),
        "t_leaf": np.concatenate(leaf),
        "t_value": np.concatenate(value).astype(np.float64),
        "t_roots": np.array(roots, dtype=np.int32),
        "t_baseline": np.array(float(model._baseline_prediction.ravel()[0])),
        "t_depth": np.array(depth + 1),
    }
    return arrays, model.decision_function


def fit_mlp(
    x: np.ndarray, y: np.ndarray, args: argparse.Namespace, weight: np.ndarray
) -> tuple[dict[str, np.ndarray], Any]:
    del weight  # scikit-learn's MLP takes no sample weights
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 1e-6, scaler.scale_, 1.0)
    model = MLPClassifier(
        hidden_layer_sizes=(args.hidden,),
        alpha=args.alpha,
        max_iter=300,
        early_stopping=True,
        random_state=args.seed,
    ).fit((x - scaler.mean_) / scale, y)
    arrays: dict[str, np.ndarray] = {
        "mean": scaler.mean_.astype(np.float32),
        "scale": scale.astype(np.float32),
        "n_layers": np.array(len(model.coefs_)),
    }
    for i, (w, b) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        arrays[f"W{i}"] = w.astype(np.float32)
        arrays[f"b{i}"] = b.astype(np.float32)

    def raw(z: np.ndarray) -> np.ndarray:
        p = model.predict_proba((z - scaler.mean_) / scale)[:, 1]
        p = np.clip(p, 1e-12, 1 - 1e-12)
        return np.log(p / (1 - p))

    return arrays, raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument(
        "--pairs",
        type=Path,
        default=os.environ.get("FLOWOPT_QQP_PAIRS"),
        help="the QQP dev pairs file (default: $FLOWOPT_QQP_PAIRS; required)",
    )
    ap.add_argument(
        "--out", type=Path, default=ROOT / "src" / "flowopt" / "data" / "cache_verifier.npz"
    )
    ap.add_argument(
        "--embeddings",
        type=Path,
        default=Path.home() / ".cache" / "flowopt" / "qqp-dev-embeddings.npz",
    )
    ap.add_argument("--holdout-out", type=Path, default=Path("/tmp/flowopt-qqp-holdout.jsonl"))
    ap.add_argument(
        "--paraphrases",
        type=Path,
        default=os.environ.get("FLOWOPT_PARAPHRASE_PAIRS"),
        help="plain-paraphrase dev pairs (paraphrases-dev.jsonl); without it the verifier "
        "learns QQP alone and refuses most plain paraphrases",
    )
    ap.add_argument("--paraphrase-weight", type=float, default=1.0)
    ap.add_argument(
        "--hand-only",
        action="store_true",
        help="fit on the interpretable features only, not the embedding products",
    )
    ap.add_argument("--paraphrase-holdout", type=float, default=1 / 3)
    ap.add_argument(
        "--paraphrase-holdout-out", type=Path, default=Path("/tmp/flowopt-paraphrase-holdout.jsonl")
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=float, default=0.2)
    ap.add_argument("--model", choices=["gbm", "mlp"], default="gbm")
    ap.add_argument("--trees", type=int, default=200)
    ap.add_argument("--learning-rate", type=float, default=0.15)
    ap.add_argument("--leaves", type=int, default=31)
    ap.add_argument("--min-leaf", type=int, default=20)
    ap.add_argument("--l2", type=float, default=0.0)
    ap.add_argument(
        "--monotonic", action="store_true", help="monotonic constraints (see MONOTONIC)"
    )
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--alpha", type=float, default=3.0)
    ap.add_argument("--min-cosine", type=float, default=0.72)
    args = ap.parse_args()
    if args.pairs is None:
        ap.error(
            "pass --pairs PATH (the QQP dev pairs file, qqp-pairs-dev.jsonl: 20,000 labelled "
            "pairs, not in this repository) or set FLOWOPT_QQP_PAIRS; "
            "tests/data/qqp-sample.jsonl holds only 100 of them, enough for tests, not here"
        )
    try:
        import sklearn  # noqa: F401
    except ImportError:
        sys.exit("training needs scikit-learn: pip install scikit-learn -c constraints.txt")

    rows = load_pairs(args.pairs)
    y = np.array([int(r["duplicate"]) for r in rows])
    rng = np.random.default_rng(args.seed)
    idx = rng.permutation(len(rows))
    n_hold = int(len(rows) * args.holdout)
    hold, rest = idx[:n_hold], idx[n_hold:]
    n_cal = int(len(rest) * 0.15)
    cal, fit = rest[:n_cal], rest[n_cal:]
    with args.holdout_out.open("w") as fh:
        for i in hold:
            fh.write(json.dumps(rows[i]) + "\n")

    ea, eb = embed_all(rows, args.embeddings)
    if args.paraphrases is not None:
        args.paraphrases = Path(args.paraphrases)
    qa = [r["a"] for r in rows]
    qb = [r["b"] for r in rows]
    t0 = time.perf_counter()
    # The cache stores `a` and is asked `b`: query = b, cached = a (and the mirror for fit).
    x_ba = pair_matrix(qb, qa, eb, ea)
    x_ab = pair_matrix(qa, qb, ea, eb)
    print(f"features: {x_ba.shape[1]} per pair in {time.perf_counter() - t0:.1f} s")

    x_fit = np.vstack([x_ba[fit], x_ab[fit]])
    y_fit = np.concatenate([y[fit], y[fit]])
    w_fit = np.ones(len(y_fit))
    para = None
    if args.paraphrases is not None:
        para = paraphrase_sets(args, rows_of=load_pairs(args.paraphrases))
        x_fit = np.vstack([x_fit, para["x_fit"]])
        y_fit = np.concatenate([y_fit, para["y_fit"]])
        # Weigh the paraphrase rows as a share of the QQP rows, whatever their count.
        share = args.paraphrase_weight * len(w_fit) / max(1, len(para["y_fit"]))
        w_fit = np.concatenate([w_fit, np.full(len(para["y_fit"]), share)])
    if args.hand_only:
        # Trees over the first columns only: their feature indices are the same in the full
        # run-time vector, so nothing changes at serving time.
        x_fit = x_fit[:, : len(HAND_FEATURES)]
    t0 = time.perf_counter()
    fitter = fit_gbm if args.model == "gbm" else fit_mlp
    arrays, raw_score = fitter(x_fit, y_fit, args, w_fit)
    print(f"fitted {args.model} in {time.perf_counter() - t0:.0f} s")

    def prob(x: np.ndarray) -> np.ndarray:
        cols = x[:, : len(HAND_FEATURES)] if args.hand_only else x
        p = 1.0 / (1.0 + np.exp(-np.clip(raw_score(cols), -35, 35)))
        # Candidates under min_cosine never reach the verifier at run time.
        return np.where(x[:, 0] >= args.min_cosine, p, 0.0)

    p_cal = prob(x_ba[cal])
    thresholds = {f"p{int(t * 100)}": threshold_for(p_cal, y[cal], t) for t in PRECISIONS}
    thresholds.update({name: thresholds[p] for name, p in NAMED.items()})
    p_hold = prob(x_ba[hold])
    cos_hold = np.where(x_ba[hold, 0] >= args.min_cosine, x_ba[hold, 0], 0.0)
    report: dict[str, Any] = {
        "pairs": str(args.pairs.name),
        "seed": args.seed,
        "split": {"fit": len(fit), "calibration": len(cal), "holdout": len(hold)},
        "verifier_holdout": summarise(p_hold, y[hold], thresholds),
        "cosine_only_holdout": summarise(cos_hold, y[hold], {}),
    }
    if para is not None:
        report["paraphrases"] = {
            "split": para["split"],
            "recall_holdout": {
                name: round(float((prob(para["x_hold"]) >= t).mean()), 4)
                for name, t in thresholds.items()
            },
            "recall_fit": {
                name: round(float((prob(para["x_fit_pos"]) >= t).mean()), 4)
                for name, t in thresholds.items()
            },
            "fact_changes_served_holdout": {
                name: round(float((prob(para["x_hold_neg"]) >= t).mean()), 4)
                for name, t in thresholds.items()
            },
        }
    meta = {
        "format": "flowopt-cache-verifier/1",
        "features": [*HAND_FEATURES, "abs_diff[384]", "product[384]"],
        "embedder": MiniLMEmbedder.identity,
        "min_cosine": args.min_cosine,
        "operating_points": thresholds,
        "named_points": NAMED,
        "calibration_curve": calibration_curve(p_cal, y[cal]),
        "trained_on": [args.pairs.name]
        + ([args.paraphrases.name] if args.paraphrases is not None else []),
        "kind": args.model,
        "hyperparameters": {
            k: getattr(args, k)
            for k in (
                "trees",
                "learning_rate",
                "leaves",
                "hidden",
                "alpha",
                "paraphrase_weight",
                "hand_only",
                "monotonic",
                "min_leaf",
                "l2",
            )
        },
        "report": report,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, meta=np.array(json.dumps(meta)), **arrays)
    print(json.dumps(report, indent=2))
    size = args.out.stat().st_size // 1024
    print(f"wrote {args.out} ({size} KiB); held-out pairs: {args.holdout_out}")


if __name__ == "__main__":
    main()
