"""The cache middleware records consent (the capture tag and the turns before the
question) only when the pipeline captures content: checked through the real middleware
over a real embedded store, with a fake backend."""

from __future__ import annotations

from pathlib import Path

from distill_stores import SYSTEM

from flowopt.cache import CacheMiddleware
from flowopt.cache._capture import CAPTURE_TAG
from flowopt.cache.stores.gptcache import GPTCacheStore
from flowopt.distill import export
from flowopt.middleware.base import PipelineContext, build_stack, traced_backend
from flowopt.testing.fakes import FakeBackend
from flowopt.tracing import PipelineTracing, get_tracer
from flowopt.types import Request

MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Opening hours?"}]


async def _ask(path: Path, capture: bool) -> None:
    backend = FakeBackend(lambda r: "Nine to five.", model="qwen0.5b")
    store = GPTCacheStore(path)
    mw = CacheMiddleware(store=store, semantic=False)
    tracing = PipelineTracing(get_tracer(), capture_content=capture)
    await mw.setup(PipelineContext("p", backend, tracing=tracing))
    handler = build_stack([("cache", mw)], traced_backend(backend, name="fake"))
    resp = await handler(Request.chat(MESSAGES, params={"temperature": 0.0}, tenant="acme"))
    await resp.complete()
    await mw.aclose()


async def test_capture_off_keeps_no_context_and_exports_nothing(tmp_path: Path) -> None:
    await _ask(tmp_path / "off", capture=False)
    (stored,) = GPTCacheStore(tmp_path / "off").entries()
    assert CAPTURE_TAG not in stored.tags and "context" not in stored.response
    assert stored.question == "Opening hours?"  # what replay needs, and only that


async def test_capture_on_exports_the_whole_prompt(tmp_path: Path) -> None:
    await _ask(tmp_path / "on", capture=True)
    (stored,) = GPTCacheStore(tmp_path / "on").entries()
    assert CAPTURE_TAG in stored.tags
    assert stored.response["context"] == [{"role": "system", "content": SYSTEM}]
    out = tmp_path / "t.jsonl"
    report = export(out, since=0, sources=["cache:" + str(tmp_path / "on")], holdout=0)
    assert report.train == 1
    assert out.read_text().count('"role"') == 3  # system, user, assistant
