"""Unit tests of the compress middleware's logic with a named fake scorer (one word = one
token; surprise = a fixed function of the word) and a scripted terminal whose latencies we
choose, so the decision logic is tested exactly. The real scorer is tested in
test_compress_real.py."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any

import pytest

from flowopt.compress import (
    Compress,
    PrefillModel,
    PromptTooLongError,
    find_spans,
    mark,
    select,
)
from flowopt.compress._protect import protected_ranges
from flowopt.errors import ConfigError, InvalidRequestError
from flowopt.middleware.base import build_stack
from flowopt.testing import SpanCapture
from flowopt.types import Message, Request, Response, Usage

_WORD = re.compile(r"\S+")


class FakeWordScorer:
    """Fake scorer: tokens are whitespace words, surprise is crc32(word) mod 100 (a fixed,
    arbitrary order), relevance is the number of question words a passage contains."""

    name = "fake-words"

    def __init__(self) -> None:
        self.scored = 0

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text))

    def token_scores(self, text: str) -> list[tuple[int, int, float]]:
        self.scored += 1
        return [
            (m.start(), m.end(), float(zlib.crc32(m.group().encode()) % 100))
            for m in _WORD.finditer(text)
        ]

    def rank(self, passages: list[str], question: str) -> list[float]:
        q = {w.lower() for w in _WORD.findall(question)}
        return [float(sum(w.lower() in q for w in _WORD.findall(p))) for p in passages]


class FakeScriptedTerminal:
    """Fake backend terminal: records requests; answers with a latency of
    ``base_s + input_tokens / tps`` seconds (reported, never slept)."""

    def __init__(self, tps: float = 100.0, base_s: float = 0.05) -> None:
        self.tps = tps
        self.base_s = base_s
        self.requests: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        tokens = sum(len(m.text.split()) + 4 for m in request.messages)
        return Response(
            text="answer",
            model="scripted",
            usage=Usage(input_tokens=tokens, output_tokens=1),
            latency_ms=(self.base_s + tokens / self.tps) * 1000.0,
        )


PROSE = (
    "The river valley was settled by farmers who grew wheat and barley along the banks "
    "while traders moved goods between the hill towns and the coast over many generations "
)


def _passages(n: int, words: int = 120) -> list[str]:
    base = PROSE.split()
    return [
        f"Doc {i}: " + " ".join(base[(i + j) % len(base)] for j in range(words)) for i in range(n)
    ]


def _rag(passages: list[str], question: str = "Who grew wheat in the valley?") -> Request:
    body = "Answer from these documents.\n\n" + "\n\n".join(passages)
    req = Request(
        messages=(
            Message("system", "You are a careful assistant. " * 20),
            Message("user", f"{body}\n\nQuestion: {question}"),
        )
    )
    return mark(req, passages, question=question)


def _decision(resp: Response) -> Any:
    return next(d for d in resp.decisions if d.middleware == "compress")


# -- protection ------------------------------------------------------------------------------
def test_protected_content_survives_verbatim() -> None:
    protected = [
        "https://example.org/a/b?x=1",
        "3f2a9c1e-7b4d-4e2a-9c1f-0a1b2c3d4e5f",
        "$1,234.50",
        "INV-2024-0042",
        "`pip install flowopt`",
        "```python\nx = compute(1, 2)\nprint(x)\n```",
        "ops@example.com",
        "1956",
    ]
    text = " ".join(f"{PROSE} {p} {PROSE}" for p in protected)
    sel = select(FakeWordScorer(), [text], ratio=6.0)
    out = sel.passages[0]
    assert out is not None
    assert sel.ratio > 2.0
    for p in protected:
        assert p in out, p


def test_json_stays_valid_with_every_record() -> None:
    records = [{"id": f"A{i}", "name": "widget", "qty": i * 3} for i in range(12)]
    doc = json.dumps(records)
    text = f"{PROSE * 3} Inventory: {doc} {PROSE * 3}"
    sel = select(FakeWordScorer(), [text], ratio=4.0)
    out = sel.passages[0]
    assert out is not None and len(out) < len(text)
    start = out.index("[")
    parsed, _ = json.JSONDecoder().raw_decode(out, start)
    assert parsed == records


def test_question_words_are_kept() -> None:
    text = PROSE * 4
    sel = select(FakeWordScorer(), [text], question="Which traders reached the coast?", ratio=5)
    out = sel.passages[0] or ""
    assert "traders" in out and "coast" in out


def test_coarse_drops_least_relevant_passages() -> None:
    passages = [f"{PROSE} unrelated filler {i}" for i in range(6)]
    passages[4] = PROSE + " the lighthouse keeper Marta lit the lamp"
    sel = select(FakeWordScorer(), passages, question="lighthouse keeper lamp", ratio=4.0)
    assert sel.passages[4] is not None and "lighthouse" in sel.passages[4]
    assert sel.dropped_passages >= 3


def test_protected_ranges_finds_json_and_numbers() -> None:
    text = 'see {"a": [1, 2]} and 42'
    ranges = protected_ranges(text)
    assert any(text[s:e] == '{"a": [1, 2]}' for s, e in ranges)
    assert any(text[s:e] == "42" for s, e in ranges)


# -- the middleware ----------------------------------------------------------------------------
async def test_static_prefix_and_question_are_byte_identical() -> None:
    terminal = FakeScriptedTerminal()
    mw = Compress(ranker="lm", scorer=FakeWordScorer(), when="always", ratio=3.0)
    req = _rag(_passages(8))
    resp = await mw(req, terminal)
    sent = terminal.requests[0]
    assert sent.messages[0] == req.messages[0]  # the system prompt: untouched
    orig, new = req.messages[1].content, sent.messages[1].content
    assert isinstance(orig, str) and isinstance(new, str)
    head = "Answer from these documents.\n\n"
    tail = "\n\nQuestion: Who grew wheat in the valley?"
    assert new.startswith(head) and new.endswith(tail)
    assert len(new) < len(orig) * 0.6
    d = _decision(resp)
    assert d.action == "compressed" and d.detail["ratio"] >= 2.0
    assert d.detail["tokens_before"] > d.detail["tokens_after"]
    assert "measured_saving_ms" in d.detail


async def test_decision_flips_with_measured_prefill_speed() -> None:
    scorer = FakeWordScorer()
    # prior: a fast GPU-like prefill (20k tokens/s) and a slow compressor: not worth it
    mw = Compress(
        ranker="lm",
        scorer=scorer,
        prior_prefill_tps=20000.0,
        prior_cost_ms_per_token=0.5,
        calibrate=False,
    )
    req = _rag(_passages(10))
    fast = FakeScriptedTerminal(tps=20000.0)
    first = _decision(await mw(req, fast))
    assert (first.action, first.detail["reason"]) == ("skipped", "not_worth")
    # the backend turns out to prefill 50 tokens/s: measured on unmarked requests
    slow = FakeScriptedTerminal(tps=50.0)
    for n in (200, 800, 1600, 400, 1200):
        await mw(Request.chat("word " * n), slow)
    assert mw.prefill_model(req).prefill_tps < 150.0  # from a prior of 20,000
    second = _decision(await mw(_rag(_passages(10), "Who traded goods?"), slow))
    assert second.action == "compressed", second.detail
    assert second.detail["predicted_saving_ms"] > 50.0


async def test_first_auto_decision_uses_a_measured_compressor_cost() -> None:
    """The prior says the compressor is hopelessly slow (1 s/token); the fake scorer is
    fast. Without calibration the first decision trusts the prior and declines; with it
    (the default) the compressor is measured first and compression pays."""
    req = _rag(_passages(10))
    for calibrate, action in ((False, "skipped"), (True, "compressed")):
        mw = Compress(
            ranker="lm",
            scorer=FakeWordScorer(),
            prior_prefill_tps=50.0,
            prior_cost_ms_per_token=1000.0,
            calibrate=calibrate,
        )
        d = _decision(await mw(req, FakeScriptedTerminal(tps=50.0)))
        assert d.action == action, d.detail
        assert mw.cost.samples == (1 if calibrate else 0) + (action == "compressed")


async def test_short_and_unmarked_and_repeated_requests_are_skipped() -> None:
    terminal = FakeScriptedTerminal()
    mw = Compress(ranker="lm", scorer=FakeWordScorer(), prior_prefill_tps=20000.0, calibrate=False)
    assert _decision(await mw(Request.chat("hi"), terminal)).detail["reason"] == "unmarked"
    short = _decision(await mw(_rag(_passages(1, words=20)), terminal))
    assert short.detail["reason"] == "short"
    req = _rag(_passages(10))
    assert _decision(await mw(req, terminal)).detail["reason"] == "not_worth"
    again = _decision(await mw(req.replace(request_id="again"), terminal))
    assert again.detail["reason"] == "prefix_cached"


async def test_key_value_data_is_declined_not_lost() -> None:
    pairs = [
        [f"{i:08x}-aaaa-4bbb-8ccc-{i:012x}", f"{i + 7:08x}-dddd-4eee-8fff-{i:012x}"]
        for i in range(60)
    ]
    blob = json.dumps(dict(pairs), indent=1)
    terminal = FakeScriptedTerminal()
    mw = Compress(ranker="lm", scorer=FakeWordScorer(), when="always")
    req = _rag([blob], question="What is the value of key 00000003-aaaa-4bbb-8ccc-000000000003?")
    d = _decision(await mw(req, terminal))
    assert (d.action, d.detail["reason"]) == ("skipped", "incompressible")
    assert terminal.requests[0].messages == req.messages


async def test_tool_results_and_old_turns_by_options() -> None:
    msgs = (
        Message("system", "sys"),
        Message("user", PROSE * 3),
        Message("assistant", PROSE * 3),
        Message("tool", PROSE * 4, tool_call_id="c1"),
        Message("user", "and now?"),
    )
    req = Request(messages=msgs)
    spans = find_spans(req, roles=("tool",), keep_turns=1)
    assert sorted(s.message for s in spans) == [1, 2, 3]
    terminal = FakeScriptedTerminal()
    mw = Compress(ranker="lm", scorer=FakeWordScorer(), when="always", keep_turns=1)
    await mw(req, terminal)
    sent = terminal.requests[0].messages
    assert sent[0] == msgs[0] and sent[4] == msgs[4]
    assert len(sent[3].text) < len(msgs[3].text)


async def test_a_mark_that_matches_nothing_is_a_typed_error() -> None:
    req = mark(Request.chat("hello"), ["not in the prompt"])
    with pytest.raises(InvalidRequestError, match="not in any"):
        await Compress(ranker="lm", scorer=FakeWordScorer())(req, FakeScriptedTerminal())


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="ratio"):
        Compress(ranker="lm", scorer=FakeWordScorer(), ratio=0.5)
    with pytest.raises(ConfigError, match="overflow"):
        Compress(ranker="lm", scorer=FakeWordScorer(), overflow="truncate")


# -- the window ------------------------------------------------------------------------------
async def test_over_long_prompt_error_says_by_how_much() -> None:
    mw = Compress(ranker="lm", scorer=FakeWordScorer(), max_model_len=1000, overflow="error")
    with pytest.raises(PromptTooLongError) as info:
        await mw(_rag(_passages(12)), FakeScriptedTerminal())
    assert info.value.over_by > 0 and info.value.window == 1000
    assert f"{info.value.over_by} over" in str(info.value)


async def test_over_long_prompt_is_compressed_to_fit() -> None:
    terminal = FakeScriptedTerminal()
    mw = Compress(ranker="lm", scorer=FakeWordScorer(), max_model_len=1000, when="never")
    resp = await mw(_rag(_passages(12)), terminal)
    d = _decision(resp)
    assert (d.action, d.detail["reason"]) == ("compressed", "fit")
    sent_tokens = sum(len(m.text.split()) + 4 for m in terminal.requests[0].messages)
    assert sent_tokens <= 1000 * 0.9 - 256


async def test_over_long_prompt_beyond_the_floor_is_refused() -> None:
    mw = Compress(ranker="lm", scorer=FakeWordScorer(), max_model_len=600, max_ratio=2.0)
    with pytest.raises(PromptTooLongError):
        await mw(_rag(_passages(12)), FakeScriptedTerminal())


async def test_over_long_prompt_is_map_reduced_concurrently() -> None:
    terminal = FakeScriptedTerminal()
    mw = Compress(ranker="lm", scorer=FakeWordScorer(), max_model_len=1000, overflow="map_reduce")
    resp = await mw(_rag(_passages(12)), terminal)
    d = _decision(resp)
    assert d.action == "map_reduce" and d.detail["chunks"] >= 2
    maps, reduce = terminal.requests[:-1], terminal.requests[-1]
    assert len(maps) == d.detail["chunks"]
    for r in maps:
        assert sum(len(m.text.split()) + 4 for m in r.messages) <= 1000 * 0.9 - 256
        assert r.messages[0] == terminal.requests[0].messages[0]
    assert "Part 1 of" in reduce.messages[1].text
    every = " ".join(m.messages[1].text for m in maps)
    for i in range(12):
        assert f"Doc {i}:" in every


# -- spans -----------------------------------------------------------------------------------
async def test_span_records_the_decision_and_no_content() -> None:
    capture = SpanCapture()
    capture.clear()
    mw = Compress(ranker="lm", scorer=FakeWordScorer(), when="always")
    handler = build_stack([("compress", mw)], FakeScriptedTerminal())
    await handler(_rag(_passages(8)))
    (span,) = capture.by_name("middleware compress")
    attrs = dict(span.attributes or {})
    assert attrs["flowopt.compress.action"] == "compressed"
    for key in (
        "ratio",
        "tokens_before",
        "tokens_after",
        "predicted_saving_ms",
        "measured_saving_ms",
    ):
        assert f"flowopt.compress.{key}" in attrs
    assert not any("valley" in str(v) for v in attrs.values())


def test_prefill_model_learns_speed() -> None:
    model = PrefillModel(prior_tps=1000.0)
    for n in (100, 500, 1000, 2000, 3000, 1500):
        model.observe(n, 10, 0.1 + n / 200.0 + 10 / 30.0, ttft=False)
    assert 150 < model.prefill_tps < 260


async def test_cache_outside_compression_keys_on_the_uncompressed_request() -> None:
    from flowopt.cache import CacheMiddleware, MemoryStore
    from flowopt.middleware.base import PipelineContext, traced_backend
    from flowopt.testing.fakes import FakeBackend

    backend = FakeBackend(answer=lambda r: "Farmers grew it.")
    cache = CacheMiddleware(store=MemoryStore(), semantic=False)
    await cache.setup(PipelineContext("t", backend))
    compress = Compress(ranker="lm", scorer=FakeWordScorer(), when="always")
    handler = build_stack(
        [("cache", cache), ("compress", compress)], traced_backend(backend, name="fake")
    )
    req = _rag(_passages(8)).with_params(temperature=0.0)
    first = await (await handler(req)).complete()
    assert _decision(first).action == "compressed"
    sent = backend.calls[0].messages[1].text
    assert len(sent) < len(req.messages[1].text)
    # the same uncompressed prompt, not even marked: a hit, so the key is the original text
    unmarked = req.replace(metadata={}, request_id="second")
    second = await (await handler(unmarked)).complete()
    assert second.cached and second.text == first.text
    assert len(backend.calls) == 1


def retrieve_fixture_docs(state: dict[str, Any]) -> str:
    """A retrieval step for the pipeline test: six passages, blank-line separated."""
    return "\n\n".join(_passages(6))


async def test_compressible_template_fields_are_marked_and_round_trip_yaml(tmp_path: Path) -> None:
    """A step's ``compressible`` template fields reach the middleware as marked passages
    (one per paragraph); the system prompt and the question are sent byte for byte."""
    from flowopt import load_spec, parse_spec, pipeline
    from flowopt.testing import FakeBackend

    docs = _passages(6)
    backend = FakeBackend()
    mw = Compress(ranker="lm", scorer=FakeWordScorer(), when="always", ratio=3.0)
    steps = [
        {"name": "docs", "function": f"{__name__}:retrieve_fixture_docs"},
        {
            "name": "answer",
            "system": "You are a careful assistant.",
            "prompt": "Documents:\n{docs}\n\nQuestion: {input}",
            "compressible": ["docs"],
        },
    ]
    pipe = pipeline("rag", backend=backend, steps=steps, middleware=[mw])
    spec = parse_spec({"name": "rag", "backend": "http://127.0.0.1:9/v1", "steps": steps})
    path = tmp_path / "rag.yaml"
    path.write_text(spec.to_yaml())
    assert "compressible" in spec.to_yaml() and load_spec(path) == spec
    async with pipe:
        await pipe.ainvoke("Who grew wheat in the valley?")
    sent = backend.calls[0]
    assert sent.messages[0].text == "You are a careful assistant."
    user = sent.messages[1].text
    assert user.startswith("Documents:\n") and user.endswith(
        "Question: Who grew wheat in the valley?"
    )
    kept = len(user.split())
    assert kept * 2.5 < sum(len(d.split()) for d in docs)


def test_compressible_field_must_be_a_prompt_field() -> None:
    from flowopt import pipeline
    from flowopt.errors import ConfigError
    from flowopt.testing import FakeBackend

    with pytest.raises(ConfigError, match="compressible field 'doc' is not a field"):
        pipeline(
            "rag",
            backend=FakeBackend(),
            steps=[{"name": "a", "prompt": "{docs} {input}", "compressible": ["doc"]}],
        )
