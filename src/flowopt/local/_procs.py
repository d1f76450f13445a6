"""What the operating system says about processes, ports and logs (Linux ``/proc``).

Kept apart from :mod:`flowopt.local.server` so the server manager reads as policy (when to
start, wait, kill) and this module as mechanism (how to tell whether a pid is still the
process we started, whether a port is free, what a server answers).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import httpx

__all__ = [
    "cmdline",
    "find_free_port",
    "group_alive",
    "log_tail",
    "port_is_free",
    "probe",
    "proc_start_ticks",
]


def find_free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now (racy by nature; good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` (SO_REUSEADDR ignores TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def proc_start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22), or
    None if it is gone. Together with the pid it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after ')' are plain.
    rest = stat.rsplit(")", 1)[1].split()
    return int(rest[19])  # field 22 overall; rest[0] is field 3


def _proc_state_and_group(pid: int) -> tuple[str, int] | None:
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return rest[0], int(rest[2])  # state (field 3), pgrp (field 5)


def cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid`` as the kernel reports it, or None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode("utf-8", "replace").rstrip("\0").split("\0")


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        info = _proc_state_and_group(int(entry.name))
        if info and info[1] == pgid and info[0] != "Z":
            return True
    return False


def _probe(base_url: str, *, timeout: float) -> tuple[bool, tuple[str, ...], str]:
    """(healthy, served model ids, detail) for the server at ``base_url``."""
    try:
        with httpx.Client(timeout=timeout) as client:
            health = client.get(f"{base_url}/health")
            if health.status_code != 200:
                return False, (), f"/health answered {health.status_code}"
            resp = client.get(f"{base_url}/v1/models")
            resp.raise_for_status()
            ids = tuple(str(m["id"]) for m in resp.json().get("data", []))
    except httpx.HTTPError as exc:
        return False, (), f"{type(exc).__name__}: {exc}"
    except (ValueError, KeyError, TypeError) as exc:
        return False, (), f"/v1/models answered something unexpected: {exc}"
    return True, ids, "healthy"


def probe(base_url: str, *, timeout: float = 5.0) -> tuple[bool, tuple[str, ...], str]:
    """(healthy, served model ids, detail) of any OpenAI-compatible vLLM server."""
    return _probe(base_url.rstrip("/"), timeout=timeout)
