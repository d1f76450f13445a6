"""``redact`` by name in a YAML spec, through ``flowopt.load``, against a real vLLM server.

What crossed the wire is read from the backend's CLIENT span with GenAI content capture
on: that attribute is written from the very request the HTTP backend serialised, so it
shows what the server received, not what the middleware meant to send.
"""

from __future__ import annotations

import json
from pathlib import Path

import flowopt
import pytest
from flowopt import Params, Request, Result, TokenEvent
from flowopt.testing import SpanCapture

pytestmark = pytest.mark.integration

SECRET = "My e-mail is jane.doe@example.com and my phone is +1-202-555-0143. Say hi."

SPEC = """\
name: redact-integration
backend:
  vllm:
    base_url: {url}
    model: {model}
middleware:
  - redact: [email, phone]
defaults:
  temperature: 0
  max_tokens: 12
steps:
  - name: answer
    system: You are a polite assistant. Answer in one short sentence.
    prompt: "{{input}}"
"""


@pytest.fixture
def spec_path(tmp_path: Path, vllm_url: str, vllm_model: str) -> Path:
    path = tmp_path / "redact.yaml"
    path.write_text(SPEC.format(url=vllm_url, model=vllm_model), encoding="utf-8")
    return path


@pytest.fixture
def capture_content(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")


def _sent_texts(spans: SpanCapture) -> list[str]:
    """Every message/prompt text the backend sent, from the CLIENT spans."""
    out: list[str] = []
    for span in spans.by_name("chat ") + spans.by_name("text_completion "):
        raw = (span.attributes or {})["gen_ai.input.messages"]
        assert isinstance(raw, str)
        out.extend(p["content"] for m in json.loads(raw) for p in m["parts"])
    return out


def _assert_redacted(sent: list[str]) -> None:
    assert sent, "no backend span recorded what was sent"
    joined = "\n".join(sent)
    assert "[EMAIL]" in joined and "[PHONE]" in joined
    assert "jane.doe" not in joined and "555-0143" not in joined


@pytest.mark.usefixtures("capture_content")
async def test_yaml_spec_redacts_before_the_real_server(
    spec_path: Path, spans: SpanCapture
) -> None:
    pipe = flowopt.load(spec_path)
    assert [name for name, _ in pipe.middleware] == ["redact"]
    async with pipe:
        result = await pipe.ainvoke(SECRET)
    assert isinstance(result.text, str) and result.text.strip()
    (decision,) = result.decisions
    assert decision.action == "redacted"
    assert dict(decision.detail) == {"total": 2, "email": 1, "phone": 1}
    _assert_redacted(_sent_texts(spans))
    (mw_span,) = spans.by_name("middleware redact")
    assert (mw_span.attributes or {})["flowopt.redact.total"] == 2


@pytest.mark.usefixtures("capture_content")
async def test_streamed_run(spec_path: Path, spans: SpanCapture) -> None:
    pipe = flowopt.load(spec_path)
    tokens: list[str] = []
    final: Result | None = None
    async with pipe:
        async for event in pipe.astream(SECRET):
            if isinstance(event, TokenEvent):
                tokens.append(event.text)
            elif isinstance(event, Result):
                final = event
    assert final is not None and tokens
    assert "".join(tokens) == final.text
    assert [d.action for d in final.decisions] == ["redacted"]
    _assert_redacted(_sent_texts(spans))


@pytest.mark.usefixtures("capture_content")
async def test_completion_prompt(spec_path: Path, spans: SpanCapture) -> None:
    pipe = flowopt.load(spec_path)
    async with pipe:
        request = Request(prompt=f"Note: {SECRET}\nReply:", params=Params(0.0, max_tokens=8))
        resp = await pipe.acall(request)
        final = await resp.complete()
    assert isinstance(final.text, str)
    assert [d.action for d in final.decisions] == ["redacted"]
    _assert_redacted(_sent_texts(spans))


async def test_clean_request_is_left_alone(spec_path: Path) -> None:
    pipe = flowopt.load(spec_path)
    async with pipe:
        result = await pipe.ainvoke("What is 2 + 2? Version 1.2.3 shipped on 2024-01-15.")
    (decision,) = result.decisions
    assert decision.action == "clean"
