"""Summarise the phase timestamps that ``gateway_ablation.patch`` writes.

    python benchmarks/ablation/phases.py /tmp/phases

Reads ``phases_<pid>.json`` (flowopt: a list of requests, each a list of
``[mark, perf_counter]``) and ``floor_<pid>.json`` (the floor: ``[headers, first chunk]``
seconds after the request arrived) from the directory, and prints the median time between
consecutive marks of a streamed request, then the floor's two figures.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
from pathlib import Path


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/phases")
    runs: list[list[list[object]]] = []
    for path in sorted(folder.glob("phases_*.json")):
        runs.extend(json.loads(path.read_text()))
    gaps: dict[str, list[float]] = {}
    for marks in runs:
        for (a, ta), (b, tb) in itertools.pairwise(marks):
            gaps.setdefault(f"{a} -> {b}", []).append(float(str(tb)) - float(str(ta)))
    for step, values in gaps.items():
        print(f"{step:40s} n={len(values):5d}  p50 {statistics.median(values) * 1e6:6.0f} us")
    if runs:
        total = statistics.median(float(str(m[-1][1])) - float(str(m[0][1])) for m in runs)
        print(f"{'entry -> first event sent':40s}          p50 {total * 1e6:6.0f} us")
    floor: list[list[float]] = []
    for path in sorted(folder.glob("floor_*.json")):
        floor.extend(json.loads(path.read_text()))
    if floor:
        head = statistics.median(x[0] for x in floor)
        first = statistics.median(x[1] for x in floor)
        print(f"floor: entry -> upstream headers p50 {head * 1e6:.0f} us, ", end="")
        print(f"entry -> first event sent p50 {first * 1e6:.0f} us (n={len(floor)})")


if __name__ == "__main__":
    main()
