"""Property: any mutation of any example spec loads as a valid spec or fails with a typed
:class:`~flowopt.errors.ConfigError`, never another exception (issue 20).

Mutations are drawn two ways: structural (a value anywhere in the spec's data replaced by
any YAML-able value, or by a YAML-hostile string written back verbatim) and textual
(hostile bytes spliced into the file: anchors, aliases, tags, brackets, tabs, non-UTF-8).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st
from tests.fuzz.fuzz_budget import budget, record

from flowopt.errors import ConfigError
from flowopt.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("src/flowopt/specs/*.yaml")], key=str)
TEXTS = [p.read_bytes() for p in SPECS]
HOSTILE = [
    b"&a ",
    b"*a",
    b"*b",
    b"&b [*a, *a, *a]",
    b"!!python/object:os.system ",
    b"!!binary ",
    b"!!timestamp ",
    b"!!float ",
    b"[",
    b"]",
    b"{",
    b"}",
    b": ",
    b"- ",
    b"\t",
    b"\n  ",
    b"? ",
    b"'",
    b'"',
    b"\xff\xfe",
    b"\x00",
    b"%YAML 1.1\n",
    b"---\n",
    b"${",
    b"${X:-",
    b"2024-13-45",
    b".nan",
    b"~",
    b"<<: *a\n",
]
_scalar = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=10)
    | st.sampled_from(["INFO", "vllm", "fake", "x", "${HOME}", "${NOPE}", "{input}", "{"])
)
values = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


def _replace(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    data[path[0]] = _replace(data[path[0]], path[1:], value)
    return data


@st.composite
def mutated_specs(draw: st.DrawFn) -> bytes:
    text = draw(st.sampled_from(TEXTS))
    if draw(st.booleans()):
        data = yaml.safe_load(text)
        path = draw(st.sampled_from(_paths(data)))
        return yaml.safe_dump(_replace(data, path, draw(values)), allow_unicode=True).encode()
    raw = bytearray(text)
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        if draw(st.booleans()):
            raw[at:at] = draw(st.sampled_from(HOSTILE))
        else:
            del raw[at : at + draw(st.integers(min_value=1, max_value=8))]
    return bytes(raw)


def test_the_example_specs_are_found() -> None:
    assert len(SPECS) >= 2, SPECS
    for path in SPECS:
        load_spec(path)


def test_any_mutated_spec_is_valid_or_a_typed_error() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"

        @budget
        @given(raw=mutated_specs())
        def check(raw: bytes) -> None:
            path.write_bytes(raw)
            try:
                load_spec(path)
                outcome = "valid"
            except ConfigError as exc:
                outcome = type(exc).__name__
            record("spec", raw, outcome)

        check()
