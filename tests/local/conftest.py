"""Fixtures for the local-server tooling: a private flowopt home and a fake vLLM.

The fake is a tiny HTTP server launched the way :class:`LocalServer` launches vLLM
(``PYTHON -m vllm.entrypoints.openai.api_server --port P ...``), so start, status, stop,
pid checks and log handling are tested in milliseconds without a 4 GB engine. One
integration test (``test_backend_cli_real.py``) covers the real thing.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

FAKE_VLLM = textwrap.dedent(
    """\
    #!{python}
    # Stands in for the interpreter: argv is [-m, vllm.entrypoints..., --flag value ...].
    import json, os, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    args = sys.argv[1:]
    opts, i = {{}}, 2
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            opts[args[i]] = args[i + 1]; i += 2
        else:
            opts[args[i]] = ""; i += 1
    mode = os.environ.get("FAKE_VLLM_MODE", "serve")
    print("fake vllm starting", " ".join(args), flush=True)
    if mode == "crash":
        print("RuntimeError: pretend the engine ran out of memory", flush=True)
        sys.exit(3)
    if mode == "hang":
        time.sleep(600)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                body = b""
            elif self.path == "/v1/models":
                name = opts["--served-model-name"]
                body = json.dumps({{"object": "list", "data": [{{"id": name}}]}}).encode()
            else:
                self.send_response(404); self.end_headers(); return
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    HTTPServer((opts["--host"], int(opts["--port"])), Handler).serve_forever()
    """
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private ``FLOWOPT_HOME`` so tests never touch the user's servers or models."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("FLOWOPT_HOME", str(path))
    return path


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A directory that passes for a Hugging Face checkpoint (the fake never loads it)."""
    path = tmp_path / "tiny-model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")
    return path


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    """Path of an executable that behaves like ``python -m vllm...api_server``; set
    ``FAKE_VLLM_MODE`` to ``crash`` or ``hang`` (with monkeypatch) to misbehave."""
    script = tmp_path / "fake-vllm-python"
    script.write_text(FAKE_VLLM.format(python=sys.executable))
    script.chmod(0o755)
    return str(script)
