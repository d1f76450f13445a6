"""Manage a local vLLM-CPU server: start it detached, find it again, stop it safely.

The server is vLLM's OpenAI-compatible API server run as its own process group, so it
outlives the command that started it (``flowopt backend up`` returns, the server keeps
serving). Everything needed to find it again is in a small JSON state file per port under
``$FLOWOPT_HOME/servers/``; its log goes to ``$FLOWOPT_HOME/logs/``.

Why it is built the way it is:

* ``vllm serve`` does not work under the ``vllm-cpu`` distribution name, so the module
  entry point is run with the interpreter that runs flowopt.
* fp32 + ``--enforce-eager``: bf16 gives wrong answers with the small model, and graph
  capture only costs start time on CPU.
* Start-up is observed, not assumed: the process must answer ``/health`` and then list the
  served model on ``/v1/models``. If it exits first, the error carries the log tail, which
  is where the cause is.
* Stopping checks that the pid still belongs to *our* server (``/proc`` cmdline and start
  time) before signalling, so a stale state file can never make us kill a recycled pid.
  It sends SIGTERM to the server's process group (the engine core and workers are in it),
  then SIGKILL if it does not exit in time.
* Never send a per-request ``seed`` to this build: it crashes the engine whenever a
  prefill is chunked (see docs/local-backend.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flowopt.local._cpus import affinity_setter, pin_env
from flowopt.local._procs import (
    cmdline,
    find_free_port,
    group_alive,
    log_tail,
    port_is_free,
    probe,
    proc_start_ticks,
)
from flowopt.local.errors import (
    LocalServerError,
    PortInUseError,
    ServerNotRunning,
    ServerStartError,
    missing_dependency,
)
from flowopt.local.models import MODELS, LocalModel, flowopt_home, get_model, resolve_model
from flowopt.local.profiles import get_profile

__all__ = [
    "DEFAULT_PORT",
    "LocalServer",
    "ServerConfig",
    "ServerState",
    "ServerStatus",
    "find_free_port",
    "log_tail",
    "port_is_free",
    "probe",
    "running_server",
    "split_extra_args",
]

DEFAULT_PORT = 8000
ENTRY_MODULE = "vllm.entrypoints.openai.api_server"
ENTRY_POINTS = {"vllm": ENTRY_MODULE, "llamacpp": "_llamacpp_serve.py"}
"""What a server's command line runs, by engine (see flowopt.local.llamacpp)."""
PYTHON_ENV = "FLOWOPT_VLLM_PYTHON"
_POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How to run one server. ``model`` is a registry name (``smollm2``, ``qwen0.5b``) or
    an HF dir. Settings left as None come from the model's registry entry (or, for a
    dir, from ``settings_from`` when given, else the defaults below)."""

    model: str = "smollm2"
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"
    served_name: str | None = None
    """Name clients pass as ``model``; defaults to the registry entry's served name, or
    the dir's name."""
    max_model_len: int | None = None
    """Context length; None: the registry entry's (2048 for a plain dir)."""
    kv_cache_gib: int | None = None
    """``VLLM_CPU_KVCACHE_SPACE``: GiB reserved for the KV cache; None: the registry
    entry's (1 for a plain dir, which serves 2048 x many)."""
    extra_args: tuple[str, ...] = ()
    """Passed to vLLM verbatim after the registry entry's own flags, e.g.
    ``("--no-enable-prefix-caching",)`` or ``("--speculative-config", '{...}')``."""
    settings_from: str | None = None
    """A registry name whose server settings apply when ``model`` is a dir (its
    converted checkpoint, say, served from another home)."""
    profile: str = "default"
    """Serving profile (:mod:`flowopt.local.profiles`): ``default`` (prefix caching on),
    ``no-prefix-cache`` or ``ngram`` (n-gram speculative decoding)."""
    cpus: tuple[int, ...] | None = None
    """Cores the server runs on (process affinity and vLLM's OpenMP thread binding), so
    two engines on one machine do not share cores; None: vLLM's own choice."""
    python: str = field(default_factory=lambda: os.environ.get(PYTHON_ENV) or sys.executable)
    """Interpreter that has vLLM installed: ``$FLOWOPT_VLLM_PYTHON`` (e.g. vLLM kept in a
    venv of its own), else the one running flowopt."""

    def registry_entry(self) -> LocalModel | None:
        """The registry entry whose settings apply, if any."""
        if self.settings_from is not None:
            return get_model(self.settings_from)
        return MODELS.get(self.model)

    def resolved_served_name(self) -> str:
        if self.served_name:
            return self.served_name
        entry = self.registry_entry()
        if entry is not None:
            return entry.served_name
        return Path(self.model).expanduser().resolve().name

    def resolved_max_model_len(self) -> int:
        if self.max_model_len is not None:
            return self.max_model_len
        entry = self.registry_entry()
        return entry.max_model_len if entry else 2048

    def resolved_kv_cache_gib(self) -> int:
        if self.kv_cache_gib is not None:
            return self.kv_cache_gib
        entry = self.registry_entry()
        return entry.kv_cache_gib if entry else 1

    def argv(self, model_dir: Path) -> list[str]:
        entry = self.registry_entry()
        return [
            self.python, "-m", ENTRY_MODULE,
            "--model", str(model_dir),
            "--served-model-name", self.resolved_served_name(),
            "--dtype", "float32",
            "--enforce-eager",
            "--host", self.host,
            "--port", str(self.port),
            "--max-model-len", str(self.resolved_max_model_len()),
            *(entry.server_args if entry else ()),
            *get_profile(self.profile).args(),
            *self.extra_args,
        ]  # fmt: skip

    def env(self, cache_root: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            VLLM_CPU_KVCACHE_SPACE=str(self.resolved_kv_cache_gib()),
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
            VLLM_CACHE_ROOT=str(cache_root),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        if self.cpus:
            env.update(pin_env(self.cpus))
        return env


@dataclass(frozen=True, slots=True)
class ServerState:
    """What the state file records about a started server."""

    pid: int
    port: int
    host: str
    base_url: str
    model: str
    model_dir: str
    served_name: str
    log_path: str
    started_at: float
    proc_start_ticks: int | None = None
    """Start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22);
    tells our server apart from a later process that reused its pid."""
    argv: tuple[str, ...] = ()
    profile: str = "default"
    engine: str = "vllm"
    """``vllm``, or ``llamacpp`` (:mod:`flowopt.local.llamacpp`)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ServerState:
        data: dict[str, Any] = json.loads(text)
        data["argv"] = tuple(data.get("argv") or ())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """The answer of :meth:`LocalServer.status`. ``state`` is None when none is recorded."""

    state: ServerState | None
    running: bool
    healthy: bool
    models: tuple[str, ...] = ()
    detail: str = ""

    @property
    def label(self) -> str:
        if self.state is None:
            return "down"
        if not self.running:
            return "stale"
        return "up" if self.healthy else "starting"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.label,
            "running": self.running,
            "healthy": self.healthy,
            "models": list(self.models),
            "detail": self.detail,
            "state": None if self.state is None else asdict(self.state),
        }


def _is_our_server(state: ServerState) -> bool:
    """True when ``state.pid`` is alive and is the server this state describes."""
    args = cmdline(state.pid)
    entry = ENTRY_POINTS.get(state.engine, ENTRY_MODULE)
    if args is None or not any(a == entry or a.endswith("/" + entry) for a in args):
        return False
    if str(state.port) not in args:
        return False
    if state.proc_start_ticks is not None:
        return proc_start_ticks(state.pid) == state.proc_start_ticks
    return True


class LocalServer:
    """One managed server, identified by its port.

    ``start`` launches and waits until it serves; ``status`` reads the state file and
    probes the server; ``stop`` ends it. Several servers may run on different ports.
    """

    def __init__(self, port: int = DEFAULT_PORT, *, home: Path | None = None) -> None:
        self.port = port
        self.home = home or flowopt_home()
        self.state_path = self.home / "servers" / f"{port}.json"
        self.log_path = self.home / "logs" / f"vllm-{port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def all(cls, home: Path | None = None) -> list[LocalServer]:
        """Every server with a state file under ``home``, by port."""
        base = (home or flowopt_home()) / "servers"
        ports = sorted(int(p.stem) for p in base.glob("*.json") if p.stem.isdigit())
        return [cls(port, home=home) for port in ports]

    # -- state ----------------------------------------------------------------------
    def read_state(self) -> ServerState | None:
        """The recorded state, or None. A corrupt file is reported, not trusted."""
        try:
            text = self.state_path.read_text()
        except FileNotFoundError:
            return None
        try:
            return ServerState.from_json(text)
        except (ValueError, TypeError) as exc:
            raise LocalServerError(
                f"server state file {self.state_path} is unreadable: {exc}",
                hint=f"stop the server by hand if one runs, then delete {self.state_path}",
            ) from exc

    def _write_state(self, state: ServerState) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(state.to_json())
        os.replace(tmp, self.state_path)

    def _clear_state(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()

    # -- status ---------------------------------------------------------------------
    def status(self, *, timeout: float = 2.0) -> ServerStatus:
        state = self.read_state()
        if state is None:
            return ServerStatus(None, False, False, detail="no server recorded on this port")
        if not _is_our_server(state):
            return ServerStatus(
                state, False, False,
                detail=f"pid {state.pid} is gone (stale state; `flowopt backend down` clears it)",
            )  # fmt: skip
        healthy, models, detail = probe(state.base_url, timeout=timeout)
        return ServerStatus(state, True, healthy, models, detail)

    # -- start ----------------------------------------------------------------------
    def start(
        self,
        config: ServerConfig | None = None,
        *,
        timeout: float = 300.0,
        log: Callable[[str], None] | None = None,
    ) -> ServerState:
        """Start the server and return once it serves the model (idempotent when our
        server already runs on this port). Raises PortInUseError, ServerStartError."""
        say = log or (lambda _m: None)
        cfg = config or ServerConfig(port=self.port)
        if cfg.port != self.port:
            raise ValueError(f"config port {cfg.port} != manager port {self.port}")
        existing = self.read_state()
        if existing is not None and _is_our_server(existing):
            wanted = (cfg.model, cfg.resolved_served_name())
            if (existing.model, existing.served_name) != wanted or existing.engine != "vllm":
                raise LocalServerError(
                    f"port {cfg.port} already serves {existing.served_name!r} "
                    f"(model {existing.model}, engine {existing.engine}), not {wanted[1]!r} "
                    f"(model {wanted[0]}, engine vllm)",
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
        if cfg.python == sys.executable and importlib.util.find_spec("vllm") is None:
            raise missing_dependency("vllm", "the local vLLM-CPU server")
        model_dir = resolve_model(cfg.model, home=self.home, log=say)
        argv = cfg.argv(model_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cache_root = self.home / "vllm-cache"
        cache_root.mkdir(parents=True, exist_ok=True)
        say(f"starting vLLM on {cfg.host}:{cfg.port} (log {self.log_path})")
        try:
            with open(self.log_path, "wb") as logf:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env=cfg.env(cache_root),
                    cwd=self.home,
                    start_new_session=True,  # own session + process group: survives us
                    preexec_fn=affinity_setter(cfg.cpus),
                )
        except OSError as exc:
            raise ServerStartError(
                f"could not run {cfg.python}: {exc}",
                hint=f"set {PYTHON_ENV} to a Python interpreter that has vllm-cpu installed",
            ) from exc
        self._proc = proc
        state = ServerState(
            pid=proc.pid,
            port=cfg.port,
            host=cfg.host,
            base_url=f"http://{cfg.host}:{cfg.port}",
            model=cfg.model,
            model_dir=str(model_dir),
            served_name=cfg.resolved_served_name(),
            log_path=str(self.log_path),
            started_at=time.time(),
            proc_start_ticks=proc_start_ticks(proc.pid),
            argv=tuple(argv),
            profile=cfg.profile,
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

    def _exited(self, state: ServerState) -> int | None:
        """The exit code if the server process is gone, else None."""
        if self._proc is not None and self._proc.pid == state.pid:
            return self._proc.poll()
        return None if _is_our_server(state) else -1

    def _wait_ready(self, state: ServerState, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        detail = "no answer yet"
        while time.monotonic() < deadline:
            code = self._exited(state)
            if code is not None:
                raise ServerStartError(
                    f"the vLLM server (pid {state.pid}) exited with code {code} "
                    "before it was ready",
                    log_tail=log_tail(Path(state.log_path)),
                    hint="read the log lines above; common causes: not enough free memory "
                    "(smollm2 needs ~4 GB, qwen0.5b ~8.5 GB), a bad extra server argument, or "
                    f"a model dir vLLM cannot load. Full log: {state.log_path}",
                )
            healthy, models, detail = probe(state.base_url, timeout=2.0)
            if healthy and state.served_name in models:
                return
            time.sleep(_POLL_S)
        raise ServerStartError(
            f"the vLLM server (pid {state.pid}) did not serve {state.served_name!r} "
            f"within {timeout:.0f} s ({detail})",
            log_tail=log_tail(Path(state.log_path)),
            hint="a cold start takes ~35 s (smollm2) or ~160 s (qwen0.5b) on 2 idle cores; "
            "on a busy machine raise the "
            f"timeout. Full log: {state.log_path}",
        )

    # -- stop -----------------------------------------------------------------------
    def stop(self, *, timeout: float = 30.0) -> bool:
        """Stop our server on this port. True if one was stopped, False if none ran
        (a stale state file is removed either way)."""
        state = self.read_state()
        if state is None:
            return False
        stopped = False
        if _is_our_server(state):
            self._terminate(state, timeout=timeout)
            stopped = True
        self._clear_state()
        return stopped

    def require_running(self) -> ServerState:
        st = self.status()
        if st.state is None or not st.running:
            raise ServerNotRunning(
                f"no flowopt-managed vLLM server runs on port {self.port}",
                hint=f"start one with `flowopt backend up --port {self.port}`",
            )
        return st.state

    def _terminate(self, state: ServerState, *, timeout: float = 30.0) -> None:
        """SIGTERM the server's process group, then SIGKILL it after ``timeout``."""
        pgid = state.pid  # start_new_session made the server its group leader
        for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                self._reap()
                if not group_alive(pgid):
                    return
                time.sleep(0.25)
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.poll()


@contextlib.contextmanager
def running_server(
    config: ServerConfig, *, home: Path | None = None, timeout: float = 300.0
) -> Iterator[ServerState]:
    """Start a server for the duration of a ``with`` block (tests, scripts)."""
    server = LocalServer(config.port, home=home)
    state = server.start(config, timeout=timeout)
    try:
        yield state
    finally:
        server.stop()


def split_extra_args(values: Sequence[str]) -> tuple[str, ...]:
    """Flatten repeated ``--server-arg`` values; each may hold one or several words."""
    import shlex

    out: list[str] = []
    for v in values:
        out.extend(shlex.split(v))
    return tuple(out)
