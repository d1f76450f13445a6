"""The llama.cpp engine for real: `flowopt backend up --engine llamacpp`, and flowopt's
OpenAI-compatible backend and pipelines against it.

SmolLM2's Q4_1 GGUF starts in about a second, so the CLI test starts its own server (in a
private FLOWOPT_HOME, on a free port); the backend tests share the session's
``llamacpp_url`` server (scripts/test.sh starts one for the run).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from flowopt import InvalidRequestError, Request, Result, TokenEvent, VLLMBackend, pipeline
from flowopt.errors import ConfigError
from flowopt.local import _procs as procs
from flowopt.local.llamacpp import LLAMACPP_VERSION
from flowopt.local.server import find_free_port

pytestmark = pytest.mark.integration

GREEDY = {"temperature": 0, "max_tokens": 16}
QUESTION = "What is the capital of France?"


def _flowopt(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowopt.cli", "backend", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- the CLI -------------------------------------------------------------------------------
def test_backend_up_status_down_with_real_llamacpp(tmp_path: Path) -> None:
    env = dict(os.environ, FLOWOPT_HOME=str(tmp_path / "home"))
    port = str(find_free_port())
    up = _flowopt(
        "up", "--engine", "llamacpp", "--model", "smollm2", "--port", port,
        "--max-model-len", "1024", "--threads", "1", env=env,
    )  # fmt: skip
    state_file = tmp_path / "home" / "servers" / f"{port}.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{port}/v1  model=smollm2" in up.stdout
        assert "engine=llamacpp" in up.stdout and "one request at a time" in up.stderr
        assert state["engine"] == "llamacpp" and state["model_dir"].endswith(".gguf")
        assert state["argv"][state["argv"].index("--n_threads") + 1] == "1"
        assert state["argv"][state["argv"].index("--interrupt_requests") + 1] == "false"

        status = _flowopt("status", "--json", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        (entry,) = json.loads(status.stdout)["servers"]
        assert entry["status"] == "up" and entry["models"] == ["smollm2"]
        assert entry["state"]["engine"] == "llamacpp"
        assert "structured_outputs / guided_*" in entry["unsupported"]
        text = _flowopt("status", env=env)
        assert text.returncode == 0 and "model=smollm2  engine=llamacpp" in text.stdout
        assert "llama.cpp servers do not support" in text.stdout

        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
        assert models[0]["max_model_len"] == 1024 and models[0]["owned_by"] == "llamacpp"
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "smollm2", "messages": [{"role": "user", "content": QUESTION}],
                  "max_tokens": 16, "temperature": 0},
            timeout=60,
        )  # fmt: skip
        answer.raise_for_status()
        # What the 4-bit 135M model says depends on the CPU the engine was compiled for
        # (greedy, but different kernels round differently): the engine answered is the check.
        (choice,) = answer.json()["choices"]
        assert choice["message"]["content"].strip() and choice["finish_reason"] in (
            "stop",
            "length",
        )

        again = _flowopt("up", "--engine", "llamacpp", "--port", port, "--max-model-len", "1024",
                         env=env)  # fmt: skip
        assert again.returncode == 0 and "already running" in again.stderr
        clash = _flowopt("up", "--port", port, env=env)  # a vLLM server on its port
        assert clash.returncode == 1, clash.stdout + clash.stderr
        assert "already serves 'smollm2' (model smollm2, engine llamacpp)" in clash.stderr
        assert "Traceback" not in clash.stderr
    finally:
        down = _flowopt("down", "--port", port, env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"stopped the server on port {port}" in down.stdout
    assert state and not procs.group_alive(state["pid"])
    assert _flowopt("status", env=env).returncode == 1


def test_missing_llamacpp_venv_is_a_clear_error(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        FLOWOPT_HOME=str(tmp_path / "home"),
        FLOWOPT_LLAMACPP_PYTHON=str(tmp_path / "no-venv" / "bin" / "python"),
    )
    up = _flowopt("up", "--engine", "llamacpp", "--port", str(find_free_port()), env=env)
    assert up.returncode == 2, up.stdout + up.stderr
    assert f"llama-cpp-python[server]=={LLAMACPP_VERSION}" in up.stderr
    assert "scripts/install.sh --test" in up.stderr and "Traceback" not in up.stderr
    assert not list((tmp_path / "home").glob("servers/*.json"))


def test_engine_flags_are_checked(tmp_path: Path) -> None:
    env = dict(os.environ, FLOWOPT_HOME=str(tmp_path / "home"))
    checkpoint = _flowopt("up", "--engine", "llamacpp", "--model", str(tmp_path), env=env)
    assert checkpoint.returncode == 2 and "for --engine vllm" in checkpoint.stderr
    kv = _flowopt("up", "--engine", "llamacpp", "--kv-cache-gib", "2", env=env)
    assert kv.returncode == 2 and "vLLM setting" in kv.stderr
    threads = _flowopt("up", "--threads", "2", env=env)
    assert threads.returncode == 2 and "llama.cpp setting" in threads.stderr


# -- flowopt's OpenAI-compatible backend against it ----------------------------------------
@pytest.fixture
def backend(llamacpp_url: str) -> VLLMBackend:
    return VLLMBackend(llamacpp_url, model="smollm2", engine="llamacpp")


async def test_chat_and_streamed_answer_with_usage(backend: VLLMBackend) -> None:
    info = await VLLMBackend(backend.base_urls[0], engine="llamacpp").model_info()
    assert info.id == "smollm2" and info.owned_by == "llamacpp" and info.max_model_len
    plain = await backend.generate(Request.chat(QUESTION, params=GREEDY))
    assert plain.text.strip()  # its words depend on the CPU build; stream == plain below
    assert plain.usage.input_tokens > 0 and plain.usage.output_tokens > 0
    r = await backend.generate(Request.chat(QUESTION, params=GREEDY, stream=True))
    assert r.stream is not None
    pieces = [c.text async for c in r.stream]
    final = r.stream.response
    assert final is not None and len(pieces) > 1
    assert "".join(pieces) == final.text == plain.text  # greedy: stream == non-stream
    # The stock llama.cpp server sends no usage on streams; flowopt's entry script does,
    # and it counts like the non-streamed answer.
    assert final.usage == plain.usage
    assert final.finish_reason == plain.finish_reason
    comp = await backend.generate(Request(prompt="The capital of France is", params=GREEDY))
    assert comp.text and comp.usage.input_tokens > 0
    await backend.aclose()


async def test_concurrent_streams_queue_and_all_finish(backend: VLLMBackend) -> None:
    # llama.cpp answers one at a time; by default a new request cuts the running stream
    # off (interrupt_requests), which flowopt's server start turns off.
    async def one(q: str) -> Result | None:
        r = await backend.generate(Request.chat(q, params=GREEDY, stream=True))
        assert r.stream is not None
        async for _ in r.stream:
            pass
        return r.stream.response  # type: ignore[return-value]

    finals = await asyncio.gather(*(one(f"Name a colour ({i}).") for i in range(3)))
    assert all(f is not None and f.finish_reason in ("stop", "length") for f in finals)
    await backend.aclose()


async def test_pipeline_chat_stream_and_batch(llamacpp_url: str) -> None:
    pipe = pipeline(
        "qa-llamacpp",
        backend={"vllm": {"base_url": llamacpp_url, "model": "smollm2", "engine": "llamacpp"}},
        defaults=GREEDY,
        steps=[{"name": "answer", "system": "Answer in one short sentence.", "prompt": "{input}"}],
    )
    r = await pipe.ainvoke(QUESTION)
    assert r.text.strip() and r.usage.output_tokens > 0  # words depend on the CPU build
    tokens: list[str] = []
    final: Result | None = None
    async for ev in pipe.astream(QUESTION):
        if isinstance(ev, TokenEvent):
            tokens.append(ev.text)
        elif isinstance(ev, Result):
            final = ev
    assert final is not None and final.text == r.text and len(tokens) > 1
    assert final.usage.output_tokens == r.usage.output_tokens > 0
    assert final.ttft_ms is not None
    batch = await pipe.abatch(["What is rain?", "What is snow?"], concurrency=2)
    assert all(isinstance(x, Result) and x.text for x in batch)
    await pipe.aclose()


# -- what llama.cpp does not do: a clear flowopt error, not a silently ignored field ------
async def test_unsupported_features_are_refused_before_sending(backend: VLLMBackend) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    with pytest.raises(InvalidRequestError) as err:
        await backend.generate(
            Request.chat(
                QUESTION, params={**GREEDY, "extra": {"structured_outputs": {"json": schema}}}
            )
        )
    assert "llama.cpp" in str(err.value) and "structured_outputs" in str(err.value)
    assert "json_object" in (err.value.hint or "")
    with pytest.raises(InvalidRequestError, match="n > 1"):
        await backend.generate(Request.chat(QUESTION, params={**GREEDY, "extra": {"n": 2}}))
    with pytest.raises(ConfigError, match="engine must be one of"):
        VLLMBackend(backend.base_urls[0], engine="tgi")
    await backend.aclose()


async def test_json_schema_is_translated_to_a_grammar(backend: VLLMBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    params = {
        "temperature": 0,
        "max_tokens": 48,
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    }
    r = await backend.generate(Request.chat(QUESTION + " Answer in JSON.", params=params))
    assert isinstance(json.loads(r.text)["city"], str)
    await backend.aclose()
