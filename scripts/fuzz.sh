#!/usr/bin/env bash
# A long fuzz run: the fuzz suite (tests/fuzz) in rounds, each from a fresh random seed,
# until FUZZ_SECONDS have passed; every input tried and its outcome go to FUZZ_LOG, one
# JSON line each. A round that finds a failure stops the run with pytest's report (the
# failing input, minimised, and the seed that reproduces it).
#
#   make fuzz                                   # 10 minutes, 2000 examples per property a round
#   make fuzz FUZZ_SECONDS=3600 FUZZ_EXAMPLES=5000 FUZZ_LOG=/tmp/fuzz.jsonl
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_WANTED="${FUZZ_SECONDS:-600}"
export FLOWOPT_FUZZ_EXAMPLES="${FUZZ_EXAMPLES:-2000}"
export FLOWOPT_FUZZ_LOG="${FUZZ_LOG:-$ROOT/.flowopt/fuzz-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
mkdir -p "$(dirname "$FLOWOPT_FUZZ_LOG")"
start=$(date +%s)
round=0
while [ $(( $(date +%s) - start )) -lt "$SECONDS_WANTED" ]; do
    round=$((round + 1))
    export FLOWOPT_FUZZ_SEED="$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')"
    echo "[fuzz] round $round, seed $FLOWOPT_FUZZ_SEED, $FLOWOPT_FUZZ_EXAMPLES examples per property"
    .venv/bin/python -m pytest tests/fuzz -x -q -p no:cacheprovider || {
        echo "[fuzz] round $round failed (seed $FLOWOPT_FUZZ_SEED); inputs tried: $FLOWOPT_FUZZ_LOG" >&2
        exit 1
    }
done
echo "[fuzz] $round rounds, $(wc -l < "$FLOWOPT_FUZZ_LOG") inputs tried, nothing found; log: $FLOWOPT_FUZZ_LOG"
