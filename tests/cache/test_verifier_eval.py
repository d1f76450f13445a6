"""The shipped verifier and the eval CLI (real MiniLM, real weights; small pairs file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner

from flowopt.cache._features import HAND_FEATURES, pair_vector, text_info, vetoed
from flowopt.cli.cache import command

PAIRS = [
    ("What makes a person shy?", "What makes someone shy?", 1),
    ("How do I reset my password?", "How can I reset my password?", 1),
    ("How do I learn Python quickly?", "What is the fastest way to learn Python?", 1),
    ("How can I lose weight fast?", "What is the quickest way to lose weight?", 1),
    ("What is the capital of France?", "Which city is the capital of France?", 1),
    ("How do I minimize stray loss?", "What is a stray loss?", 0),
    ("Are cats afraid of tigers?", "Are tigers afraid of cats?", 0),
    ("How do I jailbreak iOS 9.3.1?", "How do I jailbreak iOS 9.1?", 0),
    ("What is the capital of France?", "What is the capital of Germany?", 0),
    ("Who is the richest man in India?", "Who is the richest woman in India?", 0),
    ("How do I get a job at Google?", "How do I get a job at Google as a fresher?", 0),
]


def test_features_see_what_cosine_misses() -> None:
    a, b = text_info("Are cats afraid of tigers?"), text_info("Are tigers afraid of cats?")
    assert a.content == b.content  # same words...
    v = pair_vector(
        "Are cats afraid of tigers?",
        "Are tigers afraid of cats?",
        np.eye(384, dtype=np.float32)[0],
        np.eye(384, dtype=np.float32)[0],
    )
    names = dict(zip(HAND_FEATURES, v[: len(HAND_FEATURES)], strict=True))
    assert names["swap"] == 1.0 and names["order_discordance"] > 0  # ...in another order
    assert text_info("What is 9.3.1?").numbers != text_info("What is 9.1?").numbers


def test_shipped_verifier(minilm: Any, verifier: Any) -> None:
    assert verifier.meta["format"] == "flowopt-cache-verifier/3"
    points = verifier.meta["operating_points"]
    assert {"default", "strict", "lenient", "p95", "p96", "p97", "p99"} <= points.keys()
    assert points["lenient"] < points["default"] < points["strict"]
    assert 0.0 < verifier.threshold < 1.0

    def p(q: str, c: str) -> float:
        return float(verifier.probability(q, c, minilm.embed(q), minilm.embed(c)))

    same = p("How can I reset my password?", "How do I reset my password?")
    near = p("How do I minimize stray loss?", "What is a stray loss?")
    assert same > verifier.threshold > near
    assert p("Are tigers afraid of cats?", "Are cats afraid of tigers?") < verifier.threshold


def write_pairs(tmp_path: Path) -> Path:
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps({"a": a, "b": b, "duplicate": d}) + "\n" for a, b, d in PAIRS))
    return f


def test_eval_cli_json_and_plot(tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path)
    png = tmp_path / "curve.png"
    res = CliRunner().invoke(command, ["eval", "--pairs", str(pairs), "--json", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    pw, cr = report["pairwise"], report["crowded"]
    assert pw["lookups"] == len(PAIRS) and pw["duplicates"] == 5
    op = pw["at_threshold"]
    assert op["false_hits"] == 0  # none of the near misses above is served
    assert op["true_hits"] >= 1
    loose = {pt["threshold"]: pt for pt in pw["curve"]}[0.7]
    assert loose["recall"] == 1.0  # a looser operating point serves every paraphrase here
    assert loose["false_hits"] == 0  # ...and still none of the near misses
    assert cr["lookups"] == len(PAIRS)
    assert pw["curve"] and all("precision" in pt for pt in pw["curve"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_cli_bare_cosine_baseline(tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path)
    res = CliRunner().invoke(
        command,
        [
            "eval",
            "--pairs",
            str(pairs),
            "--no-verify",
            "--threshold",
            "0.8",
            "--protocol",
            "pairwise",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "bare cosine threshold 0.8" in res.output and "pairwise" in res.output


def test_store_commands(tmp_path: Path) -> None:
    from test_stores import entry

    from flowopt.cache.stores.gptcache import GPTCacheStore

    path = tmp_path / "store"
    s = GPTCacheStore(path)
    s.put(entry("a", tenant="acme", tags=("pricing",)))
    s.put(entry("b", tenant="acme", vec=2))
    s.put(entry("c", tenant="globex", vec=3))
    s.close()
    runner = CliRunner()
    out = runner.invoke(command, ["stats", "--path", str(path), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["tenants"] == {"acme": 2, "globex": 1}
    out = runner.invoke(command, ["invalidate", "--path", str(path), "--tag", "pricing"])
    assert out.exit_code == 0 and "removed 1 entries" in out.output
    out = runner.invoke(command, ["invalidate", "--path", str(path)])
    assert out.exit_code != 0  # refuses to invalidate without a criterion
    out = runner.invoke(command, ["clear", "--path", str(path), "--yes"])
    assert out.exit_code == 0 and "removed 2 entries" in out.output


def test_alignment_features_tell_a_topical_swap_from_a_rewording() -> None:
    from flowopt.cache._alignment import ALIGN_FEATURES, align_features

    def feats(a: str, b: str) -> dict[str, float]:
        return dict(zip(ALIGN_FEATURES, align_features(text_info(a), text_info(b)), strict=True))

    same = feats("How do I reset my password?", "How can I reset my password?")
    assert same["unmatched_rare_max"] == 0 and same["unmatched_logrank_max"] == 0
    swap = feats("How do I learn Java?", "How do I learn Python?")
    assert swap["unmatched_rare_min"] == 1  # one topical word on each side
    reworded = feats("Is the house big?", "Is the house large?")
    assert reworded["unmatched_rare_max"] == 0 and reworded["unmatched_common_max"] == 1
    assert feats("Is it raining?", "Is it raining")["question_b"] == 1.0


def test_a_swapped_code_identifier_is_never_served(minilm: Any, verifier: Any) -> None:
    """One API named for another is a different question however alike the sentences are;
    dropping backticks or call parentheses is not a change."""
    q = "You can use the `load_dataset()` function from the `datasets` module to load data."
    swapped = "You can use the `list_datasets()` function from the `datasets` module to load data."
    plain = "You can use the load_dataset function from the datasets module to load data."
    x = np.vstack([pair_vector(q, c, minilm.embed(q), minilm.embed(c)) for c in (swapped, plain)])
    assert list(vetoed(x)) == [True, False]
    assert verifier.probability(q, swapped, minilm.embed(q), minilm.embed(swapped)) == 0.0
    assert verifier.probability(q, plain, minilm.embed(q), minilm.embed(plain)) > 0.0


def test_any_target_precision_is_an_operating_point() -> None:
    from flowopt.cache.verifier import LearnedVerifier
    from flowopt.errors import ConfigError

    def at(point: str) -> float:
        return LearnedVerifier(operating_point=point).threshold

    assert at("p90") <= at("p93") <= at("p95") <= at("p95.5") <= at("p96") == at("default")
    curve = LearnedVerifier().meta["calibration_curve"]
    # p93 is not a recorded point: it is read off the curve, where it promised >= 93%.
    assert next(precision for th, precision, _ in curve if th == at("p93")) >= 0.93
    for bad in ("x93", "p", "p150"):
        try:
            LearnedVerifier(operating_point=bad)
        except ConfigError as exc:
            assert "p93" in (exc.hint or "")
        else:
            raise AssertionError(f"{bad!r} was accepted")
