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


def embed_all(rows: list[dict[str, Any]], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    digest = hashlib.blake2b(
        "\n".join(r["a"] + "\t" + r["b"] for r in rows).encode(), digest_size=8
    ).hexdigest()
    if cache.exists():
        with np.load(cache) as data:
            if str(data["digest"]) == digest:
                return data["a"], data["b"]
    emb = MiniLMEmbedder(threads=max(1, (os.cpu_count() or 2) // 2))
    t0 = time.perf_counter()
    a = emb.embed_many([r["a"] for r in rows])
    b = emb.embed_many([r["b"] for r in rows])
    print(f"embedded {2 * len(rows)} questions in {time.perf_counter() - t0:.0f} s")
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, a=a, b=b, digest=digest)
    return a, b


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


def fit_gbm(
    x: np.ndarray, y: np.ndarray, args: argparse.Namespace
) -> tuple[dict[str, np.ndarray], Any]:
    """Histogram GBM, flattened into arrays the runtime walks with numpy."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_iter=args.trees,
        learning_rate=args.learning_rate,
        max_leaf_nodes=args.leaves,
        early_stopping=False,
        random_state=args.seed,
    ).fit(x, y)
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
    x: np.ndarray, y: np.ndarray, args: argparse.Namespace
) -> tuple[dict[str, np.ndarray], Any]:
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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=float, default=0.2)
    ap.add_argument("--model", choices=["gbm", "mlp"], default="gbm")
    ap.add_argument("--trees", type=int, default=800)
    ap.add_argument("--learning-rate", type=float, default=0.05)
    ap.add_argument("--leaves", type=int, default=31)
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
    qa = [r["a"] for r in rows]
    qb = [r["b"] for r in rows]
    t0 = time.perf_counter()
    # The cache stores `a` and is asked `b`: query = b, cached = a (and the mirror for fit).
    x_ba = pair_matrix(qb, qa, eb, ea)
    x_ab = pair_matrix(qa, qb, ea, eb)
    print(f"features: {x_ba.shape[1]} per pair in {time.perf_counter() - t0:.1f} s")

    x_fit = np.vstack([x_ba[fit], x_ab[fit]])
    y_fit = np.concatenate([y[fit], y[fit]])
    t0 = time.perf_counter()
    arrays, raw_score = (fit_gbm if args.model == "gbm" else fit_mlp)(x_fit, y_fit, args)
    print(f"fitted {args.model} in {time.perf_counter() - t0:.0f} s")

    def prob(x: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-np.clip(raw_score(x), -35, 35)))
        # Candidates under min_cosine never reach the verifier at run time.
        return np.where(x[:, 0] >= args.min_cosine, p, 0.0)

    p_cal = prob(x_ba[cal])
    thresholds = {
        "p90": threshold_for(p_cal, y[cal], 0.90),
        "p95": threshold_for(p_cal, y[cal], 0.95),
        "p99": threshold_for(p_cal, y[cal], 0.99),
    }
    thresholds["default"] = thresholds["p95"]
    p_hold = prob(x_ba[hold])
    cos_hold = np.where(x_ba[hold, 0] >= args.min_cosine, x_ba[hold, 0], 0.0)
    report = {
        "pairs": str(args.pairs.name),
        "seed": args.seed,
        "split": {"fit": len(fit), "calibration": len(cal), "holdout": len(hold)},
        "verifier_holdout": summarise(p_hold, y[hold], thresholds),
        "cosine_only_holdout": summarise(cos_hold, y[hold], {}),
    }
    meta = {
        "format": "flowopt-cache-verifier/1",
        "features": [*HAND_FEATURES, "abs_diff[384]", "product[384]"],
        "embedder": MiniLMEmbedder.identity,
        "min_cosine": args.min_cosine,
        "operating_points": thresholds,
        "trained_on": args.pairs.name,
        "kind": args.model,
        "hyperparameters": {
            k: getattr(args, k) for k in ("trees", "learning_rate", "leaves", "hidden", "alpha")
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
