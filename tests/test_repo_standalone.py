"""A clone of this repository is self-contained: nothing tracked reads the team's data
folder that sits beside the checkout on the development machine.

Tests, examples, benchmarks, scripts, CI and the package itself must find what they need
inside the repository (tests use the samples in ``tests/data``) or take an explicit path
(``--data``, ``--pairs``). A default that points at a folder beside the checkout works on
the machine it was written on and fails (or, worse, silently skips work) everywhere else.
``.ci/run`` proves it by running the suite from a fresh clone with no such folder; this test
catches the reference before that, and names the line.

``docs/`` is exempt: it may say where the full measurement files came from.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve().relative_to(REPO).as_posix()

# "../shared", "/work/shared", "shared/data", and the same path built with pathlib:
# ROOT.parent / "shared" / "data", ROOT.parent / "shared".
OUTSIDE = re.compile(
    r"""\.\./shared\b"""
    r"""|/work/shared\b"""
    r"""|\bshared/data\b"""
    r"""|/\s*["']shared["']"""
    r"""|["']shared["']\s*/\s*["']data\b"""
)


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
    )
    files = [f for f in out.stdout.decode().split("\0") if f]
    assert files, f"git ls-files lists nothing in {REPO}"
    return files


def outside_references(path: Path) -> list[str]:
    """``path:line: text`` for each line of ``path`` that points outside the repo."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:  # binary (model weights, .npz): no paths in there
        return []
    return [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for n, line in enumerate(text.splitlines(), 1)
        if OUTSIDE.search(line)
    ]


def test_the_pattern_catches_every_spelling() -> None:
    # spelled in pieces, so this file never holds a path outside the repo itself
    sh = "sha" + "red"
    hits = [
        f'PAIRS = REPO.parent / "{sh}" / "data" / "qqp-pairs-dev.jsonl"',
        f'ROUTING_DATA = Path("/work/{sh}/data/routing-dev.jsonl")',
        f"python scripts/train_cache_verifier.py [--pairs ../{sh}/data/qqp-pairs-dev.jsonl]",
        f'ap.add_argument("--source", default=str(REPO.parent / "{sh}/data/qqp.jsonl"))',
        f"Path(__file__).parent.parent.parent / '{sh}' / 'data' / 'x.jsonl'",
        f"DATA = ROOT.parent / '{sh}'",
    ]
    misses = [
        'shared = ["redis>=5", "psycopg[binary]>=3.1", "pgvector>=0.3"]',
        'EXTRAS="local,cache,shared,gateway,dev"',
        'raise MissingDependencyError("redis", "shared", "the Redis cache store")',
        "the shared tier lives in Postgres + pgvector",
        'PAIRS = Path(__file__).resolve().parents[1] / "data" / "qqp-sample.jsonl"',
    ]
    assert [h for h in hits if not OUTSIDE.search(h)] == []
    assert [m for m in misses if OUTSIDE.search(m)] == []


def test_no_tracked_file_reads_data_beside_the_checkout() -> None:
    files = tracked_files()
    checked = [f for f in files if not f.startswith("docs/") and f != THIS]
    # The scan must cover what the issue is about, or it proves nothing.
    for must in ("tests/conftest.py", "Makefile", ".ci/run", "scripts/install.sh"):
        assert must in checked, f"{must} is not tracked (or not scanned)"
    found = [ref for f in checked if (REPO / f).is_file() for ref in outside_references(REPO / f)]
    assert found == [], (
        "these lines read data from outside the repository (use a sample under tests/data, "
        "or make the path an explicit option):\n" + "\n".join(found)
    )


def test_the_test_data_samples_are_tracked_and_small() -> None:
    files = set(tracked_files())
    for name in ("README.md", "qqp-sample.jsonl", "routing-sample.jsonl"):
        assert f"tests/data/{name}" in files, f"tests/data/{name} is not committed"
    for name in ("qqp-sample.jsonl", "routing-sample.jsonl"):
        size = (REPO / "tests" / "data" / name).stat().st_size
        assert 0 < size < 200_000, f"tests/data/{name} is {size} bytes"
