"""Run the gateway under uvicorn: ``flowopt serve SPEC``.

With ``workers > 1`` uvicorn starts that many processes and each imports the app by
name, so the spec path travels in an environment variable and :func:`app_from_env` builds
the app in each worker (a factory; one pipeline per process). Prometheus' multiprocess
mode is switched on for N > 1 so ``/metrics`` adds up every worker, not the one that
happened to answer the scrape.

uvloop and httptools are used when installed (uvicorn's ``auto``): they halve the
per-request cost of the HTTP layer, which is most of the gateway's overhead budget.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowopt.errors import MissingDependencyError

if TYPE_CHECKING:
    from flowopt.spec import GatewaySpec, PipelineSpec

__all__ = ["MAX_BODY_ENV", "SPEC_ENV", "app_from_env", "limits", "serve"]

SPEC_ENV = "FLOWOPT_GATEWAY_SPEC"
MAX_BODY_ENV = "FLOWOPT_GATEWAY_MAX_BODY_BYTES"  # --max-body-bytes, for the workers


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("uvicorn", "gateway", "flowopt serve") from None
    return uvicorn


def _settings(spec: PipelineSpec, max_body_bytes: int | None) -> GatewaySpec:
    """The spec's gateway settings, with the command line's overrides."""
    from flowopt.spec import GatewaySpec

    settings = spec.gateway or GatewaySpec()
    if max_body_bytes is None:
        return settings
    if max_body_bytes < 1:
        from flowopt.errors import ConfigError

        raise ConfigError(
            f"max_body_bytes must be >= 1, got {max_body_bytes}", hint="a size in bytes"
        )
    return settings.model_copy(update={"max_body_bytes": max_body_bytes})


def limits(settings: GatewaySpec) -> dict[str, Any]:
    """uvicorn settings for the gateway's connection limits: the guarded protocol (header
    size, count and time; connection cap: :mod:`flowopt.gateway._protocol`) and the
    keep-alive idle timeout."""
    from flowopt.gateway._protocol import guarded_protocol

    return {
        "http": guarded_protocol(settings),
        "timeout_keep_alive": settings.keep_alive_timeout,
    }


@functools.cache
def _env_settings() -> GatewaySpec:
    from flowopt.spec import load_spec

    path = os.environ.get(SPEC_ENV)
    if not path:
        from flowopt.errors import ConfigError

        raise ConfigError(
            f"{SPEC_ENV} is not set", hint="start the gateway with `flowopt serve SPEC`"
        )
    limit = os.environ.get(MAX_BODY_ENV)
    return _settings(load_spec(path), int(limit) if limit else None)


def __getattr__(name: str) -> Any:
    # With workers, uvicorn imports the protocol class by name in each worker process
    # (a class built from settings cannot be pickled to it): built here from the spec.
    if name == "WorkerProtocol":
        return limits(_env_settings())["http"]
    raise AttributeError(name)


def app_from_env() -> Any:
    """uvicorn factory: build the app from the spec named by ``$FLOWOPT_GATEWAY_SPEC``."""
    from flowopt.gateway.app import create_app
    from flowopt.pipeline import load
    from flowopt.tracing import configure_from_env

    path = os.environ.get(SPEC_ENV)
    if not path:
        from flowopt.errors import ConfigError

        raise ConfigError(
            f"{SPEC_ENV} is not set", hint="start the gateway with `flowopt serve SPEC`"
        )
    configure_from_env()  # each worker process installs its own exporter
    pipe = load(path)
    limit = os.environ.get(MAX_BODY_ENV)
    return _own_process(create_app(pipe, _settings(pipe.spec, int(limit) if limit else None)))


def _own_process(app: Any) -> Any:
    """The app as `flowopt serve` runs it: the process is the gateway's, so it may freeze
    its start-up heap (see ``Gateway.freeze_heap``)."""
    app.state.gateway.freeze_heap = True
    return app


def serve(
    spec: str | Path,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int = 1,
    max_body_bytes: int | None = None,
    log_level: str = "warning",
    access_log: bool = False,
) -> None:
    """Serve ``spec`` until interrupted. Host, port and the body limit default to the
    spec's ``gateway:`` section (then 127.0.0.1:8000, 4 MiB)."""
    from flowopt.spec import load_spec

    uvicorn = _uvicorn()
    parsed = load_spec(spec)  # fail here, in the parent, on a bad spec
    settings = _settings(parsed, max_body_bytes)
    gw = parsed.gateway
    host = host or (gw.host if gw else "127.0.0.1")
    port = port if port is not None else (gw.port if gw else 8000)
    if workers > 1:
        os.environ[SPEC_ENV] = str(Path(spec).resolve())
        if max_body_bytes is not None:
            os.environ[MAX_BODY_ENV] = str(max_body_bytes)
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="flowopt-prom-")
        uvicorn.run(
            "flowopt.gateway.server:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=access_log,
            http="flowopt.gateway.server:WorkerProtocol",
            timeout_keep_alive=settings.keep_alive_timeout,
        )
        return
    from flowopt.gateway.app import create_app
    from flowopt.pipeline import Pipeline
    from flowopt.tracing import configure_from_env

    configure_from_env()
    uvicorn.run(
        _own_process(create_app(Pipeline(parsed), settings)),
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        **limits(settings),
    )
