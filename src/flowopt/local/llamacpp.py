"""A second local engine: llama.cpp serving the registry's 4-bit GGUF files as they are.

``flowopt backend up --engine llamacpp --model smollm2|qwen0.5b`` runs
llama-cpp-python's OpenAI-compatible server (``llama_cpp.server``) on the pinned GGUF of a
registered model (:data:`flowopt.local.models.MODELS`): no fp32 conversion, ~1 s to
start, a fraction of vLLM's memory. flowopt's ``vllm`` backend talks to it like to any
OpenAI-compatible server (set its ``engine: llamacpp`` option so flowopt refuses, with a
clear error, what this engine would silently ignore: :data:`GAPS`).

Why it is built the way it is:

* **Own venv**: llama-cpp-python's ``[server]`` extra pins FastAPI/Starlette versions that
  could break flowopt's gateway, so it lives in ``.venv-llamacpp`` at the repo root
  (``scripts/install.sh`` creates it; ``$FLOWOPT_LLAMACPP_PYTHON`` points elsewhere).
* **Our entry script** (``_llamacpp_serve.py``, run by that venv's interpreter) wraps
  ``python -m llama_cpp.server``: it adds token usage to streams (the stock server sends
  none), a lock-free ``/v1/models`` with ``max_model_len`` and a ``/health`` route.
* **One request at a time**: llama-cpp-python's server holds one lock around the model
  (no parallel slots, no continuous batching); concurrent requests queue. They must not
  *interrupt* each other, so ``--interrupt_requests false`` is always passed (the default
  cuts off a running stream as soon as another request arrives).
* **Threads**: every core by default (``--threads`` overrides), for both prompt
  processing and generation.
* The same state files, logs, pid checks and stop logic as the vLLM servers
  (:class:`flowopt.local.server.LocalServer`); the state records ``engine: llamacpp``.
* A GGUF split into packages (qwen0.5b) is assembled and verified once into
  ``$FLOWOPT_HOME/gguf/``; a one-file GGUF (smollm2) is verified and served in place.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from flowopt._filelock import exclusive_lock
from flowopt.errors import MissingDependencyError
from flowopt.local._procs import log_tail, port_is_free, probe, proc_start_ticks
from flowopt.local.errors import (
    LocalServerError,
    ModelNotFoundError,
    PortInUseError,
    ServerStartError,
)
from flowopt.local.models import MODELS, flowopt_home
from flowopt.local.server import LocalServer, ServerState, _is_our_server

__all__ = [
    "ENGINE",
    "GAPS",
    "LLAMACPP_VERSION",
    "LlamaCppConfig",
    "LlamaCppServer",
    "default_port",
    "default_python",
    "gguf_file",
    "install_hint",
]

ENGINE = "llamacpp"
LLAMACPP_VERSION = "0.3.36"
"""The llama-cpp-python version scripts/install.sh installs (the entry script's patches
are written against it)."""
PYTHON_ENV = "FLOWOPT_LLAMACPP_PYTHON"
VENV_NAME = ".venv-llamacpp"
PORT_OFFSET = 100
"""``up --engine llamacpp`` without ``--port`` serves on the model's vLLM port + 100
(smollm2 8100, qwen0.5b 8101), so both engines can serve one model side by side."""
SERVE_SCRIPT = Path(__file__).with_name("_llamacpp_serve.py")
_POLL_S = 0.25

GAPS: tuple[tuple[str, str], ...] = (
    ("concurrency", "one request at a time (no parallel slots or continuous batching); "
     "concurrent requests queue"),
    ("structured_outputs / guided_*", "vLLM's structured outputs are ignored: use "
     "response_format {type: json_object, schema: ...} (grammar-constrained) instead"),
    ("response_format json_schema", "refused (HTTP 422): only {type: json_object} with an "
     "optional schema"),
    ("n > 1, best_of", "ignored: always one choice"),
    ("ignore_eos", "ignored: use min_tokens"),
    ("tool calling", "no hermes tool parser: serve qwen0.5b with --engine vllm for tools"),
    ("/metrics", "none (no Prometheus metrics)"),
    ("prefix caching", "only the previous request's prompt prefix is reused"),
)  # fmt: skip
"""What this engine does not do that the vLLM server does: (feature, what happens)."""


def _repo_root() -> Path:
    # src/flowopt/local/llamacpp.py -> the repository root (editable installs).
    return Path(__file__).resolve().parents[3]


def default_python() -> str:
    """The interpreter with llama-cpp-python[server]: ``$FLOWOPT_LLAMACPP_PYTHON``, else
    ``.venv-llamacpp/bin/python`` in the repository root (or next to flowopt's venv)."""
    env = os.environ.get(PYTHON_ENV)
    if env:
        return env
    candidates = [_repo_root() / VENV_NAME, Path(sys.prefix).parent / VENV_NAME]
    for venv in candidates:
        if (venv / "bin" / "python").exists():
            return str(venv / "bin" / "python")
    return str(candidates[0] / "bin" / "python")


def install_hint() -> str:
    return (
        f"run `scripts/install.sh --test` (it creates {VENV_NAME}), or by hand: "
        f"python3 -m venv {VENV_NAME} && {VENV_NAME}/bin/pip install "
        f"'llama-cpp-python[server]=={LLAMACPP_VERSION}' (compiles ~3 min; needs cmake, g++); "
        f"or set {PYTHON_ENV} to an interpreter that has it"
    )


def default_port(model: str) -> int:
    entry = MODELS.get(model)
    return (entry.default_port if entry else 8000) + PORT_OFFSET


def gguf_file(
    model: str, *, home: Path | None = None, log: Callable[[str], None] | None = None
) -> Path:
    """The GGUF file to serve for ``model``: a registered name (verified against its
    pinned size and sha256; chunks assembled once under ``$FLOWOPT_HOME/gguf``) or the
    path of a ``.gguf`` file (served as it is)."""
    entry = MODELS.get(model)
    if entry is None:
        path = Path(model).expanduser()
        if path.is_file():
            return path.resolve()
        what = (
            "a directory (Hugging Face checkpoints are for --engine vllm)"
            if path.is_dir()
            else "not a file"
        )
        raise ModelNotFoundError(
            f"llama.cpp serves GGUF files: {model!r} is neither a registered model nor a "
            f"GGUF file, it is {what}",
            hint=f"use one of: {', '.join(sorted(MODELS))}, or the path of a .gguf file",
        )
    source = entry.source
    parts = source.parts()
    if len(parts) == 1:  # served in place, after the digest check
        path, _temporary = source.materialize(parts[0].parent, log=log)
        return path
    cache = (home or flowopt_home()) / "gguf"
    final = cache / source.filename
    stamp = cache / f"{source.filename}.sha256"

    def ready() -> bool:
        try:
            return (
                final.stat().st_size == source.size and stamp.read_text().strip() == source.sha256
            )
        except OSError:
            return False

    if ready():
        return final
    with exclusive_lock(cache / f".{source.filename}.lock"):
        if ready():  # another process assembled it while we waited
            return final
        stamp.unlink(missing_ok=True)
        path, _temporary = source.materialize(cache, log=log)  # verified, renamed into place
        stamp.write_text(source.sha256 + "\n")
    return path


@dataclass(frozen=True, slots=True)
class LlamaCppConfig:
    """How to run one llama.cpp server. ``model``: a registry name or a .gguf path;
    settings left as None come from the registry entry (context length) or the machine
    (threads: every core)."""

    engine: ClassVar[str] = ENGINE
    model: str = "smollm2"
    port: int = 8100
    host: str = "127.0.0.1"
    served_name: str | None = None
    """Name clients pass as ``model`` (``--model_alias``); default: the registry entry's
    served name, or the file's stem."""
    n_ctx: int | None = None
    """Context length; None: the registry entry's ``max_model_len`` (2048 for a file)."""
    threads: int | None = None
    """Threads for generation and prompt processing; None: every core we may run on."""
    extra_args: tuple[str, ...] = ()
    """Passed to ``llama_cpp.server`` verbatim, e.g. ``("--n_batch", "256")``."""
    python: str = field(default_factory=default_python)

    def resolved_served_name(self) -> str:
        if self.served_name:
            return self.served_name
        entry = MODELS.get(self.model)
        return entry.served_name if entry else Path(self.model).stem

    def resolved_n_ctx(self) -> int:
        if self.n_ctx is not None:
            return self.n_ctx
        entry = MODELS.get(self.model)
        return entry.max_model_len if entry else 2048

    def resolved_threads(self) -> int:
        if self.threads is not None:
            return self.threads
        return len(os.sched_getaffinity(0)) or os.cpu_count() or 1

    def argv(self, gguf: Path) -> list[str]:
        threads = str(self.resolved_threads())
        return [
            self.python, str(SERVE_SCRIPT),
            "--model", str(gguf),
            "--model_alias", self.resolved_served_name(),
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.resolved_n_ctx()),
            "--n_threads", threads,
            "--n_threads_batch", threads,
            "--interrupt_requests", "false",
            *self.extra_args,
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONUNBUFFERED="1")


class LlamaCppServer(LocalServer):
    """A :class:`LocalServer` whose :meth:`start` runs llama.cpp; ``status`` and ``stop``
    are the shared ones (the state file says which engine a port runs)."""

    def __init__(self, port: int = 8100, *, home: Path | None = None) -> None:
        super().__init__(port, home=home)
        self.log_path = self.home / "logs" / f"llamacpp-{port}.log"

    def start(  # type: ignore[override]
        self,
        config: LlamaCppConfig | None = None,
        *,
        timeout: float = 120.0,
        log: Callable[[str], None] | None = None,
    ) -> ServerState:
        """Start llama.cpp and return once it serves (idempotent when the same server
        already runs on this port). Raises PortInUseError, ServerStartError,
        MissingDependencyError (no llama.cpp venv)."""
        say = log or (lambda _m: None)
        cfg = config or LlamaCppConfig(port=self.port)
        if cfg.port != self.port:
            raise ValueError(f"config port {cfg.port} != manager port {self.port}")
        existing = self.read_state()
        if existing is not None and _is_our_server(existing):
            wanted = (ENGINE, cfg.model, cfg.resolved_served_name())
            if (existing.engine, existing.model, existing.served_name) != wanted:
                raise LocalServerError(
                    f"port {cfg.port} already serves {existing.served_name!r} (model "
                    f"{existing.model}, engine {existing.engine})",
                    hint=f"stop it first (`flowopt backend down --port {cfg.port}`) or use "
                    "another --port",
                )
            say(f"already running (pid {existing.pid}); waiting until it serves")
            self._wait_ready(existing, timeout=timeout)
            return existing
        if not port_is_free(cfg.host, cfg.port):
            raise PortInUseError(
                f"port {cfg.port} on {cfg.host} is already in use by another process",
                hint=f"pick another port (--port), or find the owner with `ss -ltnp "
                f"'sport = :{cfg.port}'`",
            )
        if not Path(cfg.python).exists():
            err = MissingDependencyError("llama_cpp", "local", "the llama.cpp engine")
            err.message = (
                f"the llama.cpp engine needs llama-cpp-python[server]=={LLAMACPP_VERSION} "
                f"in its own venv, and {cfg.python} does not exist"
            )
            err.hint = install_hint()
            raise err
        gguf = gguf_file(cfg.model, home=self.home, log=say)
        argv = cfg.argv(gguf)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        say(f"starting llama.cpp on {cfg.host}:{cfg.port} (log {self.log_path})")
        try:
            with open(self.log_path, "wb") as logf:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env=cfg.env(),
                    cwd=self.home,
                    start_new_session=True,  # own session + process group: survives us
                )
        except OSError as exc:
            raise ServerStartError(
                f"could not run {cfg.python}: {exc}", hint=install_hint()
            ) from exc
        self._proc = proc
        state = ServerState(
            pid=proc.pid,
            port=cfg.port,
            host=cfg.host,
            base_url=f"http://{cfg.host}:{cfg.port}",
            model=cfg.model,
            model_dir=str(gguf),
            served_name=cfg.resolved_served_name(),
            log_path=str(self.log_path),
            started_at=time.time(),
            proc_start_ticks=proc_start_ticks(proc.pid),
            argv=tuple(argv),
            engine=ENGINE,
        )
        self._write_state(state)
        try:
            self._wait_ready(state, timeout=timeout)
        except BaseException:
            self._terminate(state)
            self._clear_state()
            raise
        say(f"serving {state.served_name!r} at {state.base_url} "
            f"after {time.time() - state.started_at:.1f} s")  # fmt: skip
        return state

    def _wait_ready(self, state: ServerState, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        detail = "no answer yet"
        while time.monotonic() < deadline:
            code = self._exited(state)
            if code is not None:
                tail = log_tail(Path(state.log_path))
                hint = f"read the log lines above. Full log: {state.log_path}"
                if "No module named 'llama_cpp" in tail or "No module named llama_cpp" in tail:
                    hint = (
                        f"llama-cpp-python is not installed for {state.argv[0]}: " + install_hint()
                    )
                raise ServerStartError(
                    f"the llama.cpp server (pid {state.pid}) exited with code {code} "
                    "before it was ready",
                    log_tail=tail,
                    hint=hint,
                )
            healthy, models, detail = probe(state.base_url, timeout=2.0)
            if healthy and state.served_name in models:
                return
            time.sleep(_POLL_S)
        raise ServerStartError(
            f"the llama.cpp server (pid {state.pid}) did not serve {state.served_name!r} "
            f"within {timeout:.0f} s ({detail})",
            log_tail=log_tail(Path(state.log_path)),
            hint=f"it starts in ~1 s (smollm2) on an idle machine. Full log: {state.log_path}",
        )
