"""LocalServer against a fake vLLM: state file, stale pids, failures, safe stopping."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowopt.local import _procs as procs
from flowopt.local import server as srv
from flowopt.local.errors import LocalServerError, PortInUseError, ServerStartError
from flowopt.local.server import LocalServer, ServerConfig, ServerState, find_free_port


def _config(fake_python: str, model_dir: Path, port: int, **kw: object) -> ServerConfig:
    return ServerConfig(
        model=str(model_dir), port=port, python=fake_python, served_name="tiny", **kw
    )  # type: ignore[arg-type]


@pytest.fixture
def running(home: Path, fake_python: str, model_dir: Path) -> Iterator[LocalServer]:
    port = find_free_port()
    server = LocalServer(port, home=home)
    server.start(_config(fake_python, model_dir, port), timeout=30)
    yield server
    server.stop(timeout=5)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _state(home: Path, pid: int, port: int = 8123, **kw: object) -> ServerState:
    fields: dict[str, object] = dict(
        pid=pid,
        port=port,
        host="127.0.0.1",
        base_url=f"http://127.0.0.1:{port}",
        model="smollm2",
        model_dir="/m",
        served_name="smollm2",
        log_path=str(home / "logs" / "x.log"),
        started_at=time.time(),
    )
    fields.update(kw)
    return ServerState(**fields)  # type: ignore[arg-type]


def _write(home: Path, state: ServerState) -> None:
    (home / "servers").mkdir(exist_ok=True)
    (home / "servers" / f"{state.port}.json").write_text(state.to_json())


def test_state_round_trips(home: Path) -> None:
    state = _state(home, 123, argv=("python", "-m", "x"), proc_start_ticks=42)
    assert ServerState.from_json(state.to_json()) == state


def test_state_ignores_unknown_fields(home: Path) -> None:
    data = json.loads(_state(home, 1).to_json()) | {"future_field": 1}
    assert ServerState.from_json(json.dumps(data)).pid == 1


def test_status_when_nothing_is_recorded(home: Path) -> None:
    st = LocalServer(8123, home=home).status()
    assert (st.label, st.running, st.healthy) == ("down", False, False)
    assert st.to_dict()["state"] is None


def test_corrupt_state_file_is_reported(home: Path) -> None:
    (home / "servers").mkdir()
    (home / "servers" / "8123.json").write_text("{not json")
    with pytest.raises(LocalServerError, match="unreadable") as info:
        LocalServer(8123, home=home).status()
    assert "delete" in str(info.value)


def test_stale_pid_is_reported_and_cleared(home: Path) -> None:
    _write(home, _state(home, _dead_pid()))
    server = LocalServer(8123, home=home)
    st = server.status()
    assert st.label == "stale" and not st.running
    assert server.stop() is False  # nothing to kill...
    assert server.read_state() is None  # ...but the stale file is gone


def test_a_recycled_pid_is_never_killed(home: Path) -> None:
    """Our own pid stands in for a pid the kernel gave to an unrelated process."""
    _write(home, _state(home, os.getpid()))
    server = LocalServer(8123, home=home)
    assert server.status().label == "stale"
    assert server.stop() is False  # and we are still alive to assert it


def test_start_time_mismatch_means_not_ours(home: Path) -> None:
    port = find_free_port()
    code = "import time; time.sleep(60)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, srv.ENTRY_MODULE, "--port", str(port)],
        start_new_session=True,
    )
    try:
        ticks = procs.proc_start_ticks(proc.pid)
        assert ticks is not None
        assert srv._is_our_server(_state(home, proc.pid, port, proc_start_ticks=ticks))
        assert not srv._is_our_server(_state(home, proc.pid, port, proc_start_ticks=ticks + 1))
        assert not srv._is_our_server(_state(home, proc.pid, port + 1, proc_start_ticks=ticks))
    finally:
        proc.kill()
        proc.wait()


def test_start_status_stop(running: LocalServer, home: Path) -> None:
    state = running.read_state()
    assert state is not None
    assert state.served_name == "tiny" and state.port == running.port
    assert state.base_url == f"http://127.0.0.1:{running.port}"
    assert Path(state.log_path).read_text().startswith("fake vllm starting")
    assert "--dtype float32 --enforce-eager" in " ".join(state.argv)
    st = running.status()
    assert (st.label, st.models) == ("up", ("tiny",))
    assert [s.port for s in LocalServer.all(home)] == [running.port]

    assert running.stop(timeout=5) is True
    assert running.read_state() is None
    assert not procs.group_alive(state.pid)
    assert running.status().label == "down"


def test_start_is_idempotent(running: LocalServer, fake_python: str, model_dir: Path) -> None:
    first = running.read_state()
    again = running.start(_config(fake_python, model_dir, running.port), timeout=10)
    assert again == first


def test_state_is_found_by_another_manager(running: LocalServer, home: Path) -> None:
    """`flowopt backend status` runs in a new process: only the state file links them."""
    other = LocalServer(running.port, home=home)
    assert other.status().label == "up"
    assert other.stop(timeout=5) is True


def test_port_in_use(home: Path, fake_python: str, model_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError) as info:
            LocalServer(port, home=home).start(_config(fake_python, model_dir, port))
    assert f"port {port}" in str(info.value) and "--port" in str(info.value)


def test_crash_during_start_shows_the_log_tail(
    home: Path, fake_python: str, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "crash")
    port = find_free_port()
    server = LocalServer(port, home=home)
    with pytest.raises(ServerStartError) as info:
        server.start(_config(fake_python, model_dir, port), timeout=30)
    text = str(info.value)
    assert "exited with code 3" in text
    assert "pretend the engine ran out of memory" in text  # the cause, from the log
    assert "memory" in (info.value.hint or "")
    assert server.read_state() is None


def test_start_timeout_kills_the_process(
    home: Path, fake_python: str, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "hang")
    port = find_free_port()
    server = LocalServer(port, home=home)
    with pytest.raises(ServerStartError, match="did not serve 'tiny' within 2 s"):
        server.start(_config(fake_python, model_dir, port), timeout=2)
    assert server.read_state() is None
    assert server._proc is not None and server._proc.poll() is not None


def test_missing_model_dir_fails_before_spawning(home: Path, tmp_path: Path) -> None:
    from flowopt.local.errors import ModelNotFoundError

    port = find_free_port()
    with pytest.raises(ModelNotFoundError):
        LocalServer(port, home=home).start(ServerConfig(model=str(tmp_path / "gone"), port=port))
    assert not (home / "servers" / f"{port}.json").exists()


def test_extra_args_and_env(tmp_path: Path) -> None:
    cfg = ServerConfig(
        model="smollm2",
        port=9000,
        max_model_len=4096,
        kv_cache_gib=2,
        extra_args=srv.split_extra_args(["--no-enable-prefix-caching", "--max-num-seqs 8"]),
    )
    argv = cfg.argv(tmp_path)
    assert argv[1:3] == ["-m", srv.ENTRY_MODULE]
    assert argv[-3:] == ["--no-enable-prefix-caching", "--max-num-seqs", "8"]
    assert argv[argv.index("--max-model-len") + 1] == "4096"
    assert argv[argv.index("--served-model-name") + 1] == "smollm2"
    env = cfg.env(tmp_path / "cache")
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["VLLM_NO_USAGE_STATS"] == env["DO_NOT_TRACK"] == "1"
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "cache")


def test_served_name_defaults_to_dir_name(model_dir: Path) -> None:
    assert ServerConfig(model=str(model_dir)).resolved_served_name() == "tiny-model"


def test_a_different_model_on_a_busy_port_is_refused(
    running: LocalServer, fake_python: str, tmp_path: Path
) -> None:
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text("{}")
    (other / "model.bin").write_bytes(b"")
    with pytest.raises(LocalServerError, match="already serves 'tiny'") as info:
        running.start(
            ServerConfig(model=str(other), port=running.port, python=fake_python), timeout=5
        )
    assert "backend down --port" in (info.value.hint or "")


def test_a_missing_interpreter_is_a_clear_error(home: Path, model_dir: Path) -> None:
    port = find_free_port()
    cfg = ServerConfig(model=str(model_dir), port=port, python=str(home / "no-python"))
    with pytest.raises(ServerStartError, match="could not run") as info:
        LocalServer(port, home=home).start(cfg)
    assert "FLOWOPT_VLLM_PYTHON" in (info.value.hint or "")


def test_registry_settings_apply_and_can_be_overridden(tmp_path: Path) -> None:
    qwen = ServerConfig(model="qwen0.5b", port=9001)
    argv = qwen.argv(tmp_path)
    assert argv[argv.index("--served-model-name") + 1] == "qwen0.5b"
    assert argv[argv.index("--max-model-len") + 1] == "4096"
    i = argv.index("--enable-auto-tool-choice")  # the registry's flags, then the profile's
    assert argv[i : i + 3] == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    assert argv[-1] == "--enable-prompt-tokens-details"
    assert qwen.env(tmp_path)["VLLM_CPU_KVCACHE_SPACE"] == "2"
    # A converted dir served with a registry entry's settings (the test fixtures do this).
    by_dir = ServerConfig(model=str(tmp_path), port=9001, settings_from="qwen0.5b")
    assert by_dir.argv(tmp_path) == argv
    # Explicit values win; user flags come after the model's own.
    custom = ServerConfig(
        model="qwen0.5b", port=9001, max_model_len=1024, kv_cache_gib=3, extra_args=("--x",)
    )
    argv = custom.argv(tmp_path)
    assert argv[argv.index("--max-model-len") + 1] == "1024" and argv[-1] == "--x"
    assert custom.env(tmp_path)["VLLM_CPU_KVCACHE_SPACE"] == "3"
    plain = ServerConfig(model=str(tmp_path), port=9001)
    assert plain.resolved_max_model_len() == 2048 and plain.resolved_kv_cache_gib() == 1
    assert "--tool-call-parser" not in plain.argv(tmp_path)


def test_cpus_pin_the_process_and_the_engine_threads(
    home: Path, fake_python: str, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    core = max(os.sched_getaffinity(0))
    port = find_free_port()
    server = LocalServer(port, home=home)
    cfg = _config(fake_python, model_dir, port, cpus=(core,))
    assert cfg.env(tmp_path)["VLLM_CPU_OMP_THREADS_BIND"] == str(core)
    assert "VLLM_CPU_OMP_THREADS_BIND" not in _config(fake_python, model_dir, port).env(tmp_path)
    state = server.start(cfg, timeout=30)
    try:
        assert os.sched_getaffinity(state.pid) == {core}
    finally:
        server.stop(timeout=5)


def test_cpus_are_parsed_like_taskset_and_checked() -> None:
    from flowopt.errors import ConfigError
    from flowopt.local._cpus import parse_cpus

    usable = sorted(os.sched_getaffinity(0))
    assert parse_cpus(str(usable[0])) == (usable[0],)
    assert parse_cpus(f"{usable[0]}-{usable[-1]}") == tuple(range(usable[0], usable[-1] + 1))
    for bad in ("x", "1-0", "-1", ""):
        with pytest.raises(ConfigError, match="is not a core list"):
            parse_cpus(bad)
    with pytest.raises(ConfigError, match=r"cannot run on") as info:
        parse_cpus("4096")
    assert "usable cores" in str(info.value.hint)
