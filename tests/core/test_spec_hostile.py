"""Hostile and broken spec files: each is a typed SpecError/ConfigError naming the file,
never a traceback or a hang (issue 20's reproductions, one test each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowopt._spec_yaml import MAX_DEPTH, MAX_NODES, MAX_SPEC_BYTES, SIZE_ENV
from flowopt.errors import ConfigError, SpecError
from flowopt.pipeline import load
from flowopt.spec import load_spec

BASE = 'name: p\nbackend: fake\nsteps: [{name: a, prompt: "{input}"}]\n'


def _laughs(levels: int) -> str:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*l{i - 1}"] * 9)
        lines.append(f"l{i}: &l{i} [{refs}]")
    return "\n".join(lines) + "\n"


# (name, file bytes, a phrase the message must hold)
CASES: list[tuple[str, bytes, str]] = [
    ("billion laughs", _laughs(9).encode(), f"more than {MAX_NODES} values"),
    ("laughs inside a spec", (BASE + "defaults: " + "{x: 1}\n" + _laughs(9)).encode(), "values"),
    ("recursive alias", b"a: &a [*a]\n", "refers to itself"),
    ("recursive mapping alias", b"a: &a {b: *a}\n", "refers to itself"),
    ("deep nesting", b"x: " + b"[" * 900 + b"]" * 900 + b"\n", f"deeper than {MAX_DEPTH}"),
    ("libyaml's own depth limit", b"x: " + b"[" * 5000 + b"]" * 5000, "not valid YAML"),
    ("latin-1", b"name: caf\xe9\n", "not UTF-8"),
    ("utf-16", BASE.encode("utf-16"), "not UTF-8"),
    ("bad timestamp", b"when: 2024-13-45\n", "cannot be read"),
    ("bad binary", b'b: !!binary "a"\n', "base64"),
    ("python tag", b'!!python/object/apply:os.system ["echo hi"]\n', "constructor"),
    ("two documents", b"--- 1\n--- 2\n", "another document"),
    ("tab indentation", b"name: p\n\tbackend: fake\n", "not valid YAML"),
    ("unhashable key", b"? [a, b]\n: 1\n", "unhashable key"),
    ("middleware: 5", (BASE + "middleware: 5\n").encode(), "middleware must be a list"),
    ("logging: [INFO]", (BASE + "middleware: [{logging: [INFO]}]\n").encode(), "logging.level"),
    (
        "per_tenant: x",
        (BASE + 'middleware: [{ratelimit: {per_tenant: "x"}}]\n').encode(),
        "per_tenant",
    ),
    ("top-level logging", (BASE + "logging: [INFO]\n").encode(), "logging"),
    (
        "two routes",
        (
            BASE + "routes: [{from: a, key: x, cases: {y: a}}, {from: a, key: x, cases: {z: a}}]\n"
        ).encode(),
        "two routes",
    ),
    (
        "gateway limit type",
        (BASE + "gateway: {max_connections: many}\n").encode(),
        "max_connections",
    ),
    ("gateway timeout zero", (BASE + "gateway: {header_timeout: 0}\n").encode(), "header_timeout"),
]


@pytest.mark.parametrize(("name", "raw", "phrase"), CASES, ids=[c[0] for c in CASES])
def test_a_broken_spec_is_a_typed_error(tmp_path: Path, name: str, raw: bytes, phrase: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert phrase in str(err.value)


def test_a_wrong_backend_option_type_is_a_config_error_not_an_attribute_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        'name: p\nbackend: {vllm: {base_url: 8000}}\nsteps: [{name: a, prompt: "{input}"}]\n'
    )
    with pytest.raises(ConfigError) as err:
        load(path)
    assert "vllm.base_url" in str(err.value) and "string" in str(err.value)


def test_the_size_cap_and_its_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + "description: '" + "x" * MAX_SPEC_BYTES + "'\n")
    with pytest.raises(SpecError, match="over the limit"):
        load_spec(path)
    assert load_spec(path, max_bytes=2 * MAX_SPEC_BYTES).name == "p"
    monkeypatch.setenv(SIZE_ENV, str(2 * MAX_SPEC_BYTES))
    assert load_spec(path).name == "p"
    monkeypatch.setenv(SIZE_ENV, "lots")
    with pytest.raises(SpecError, match=SIZE_ENV):
        load_spec(path)


def test_aliases_within_the_bound_still_load(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\nbackend: fake\ndefaults: &d {temperature: 0}\n"
        'steps: [{name: a, prompt: "{input}", params: *d}, {name: b, prompt: "{a}", params: *d}]\n'
    )
    spec = load_spec(path)
    assert spec.steps[0].params == spec.steps[1].params == {"temperature": 0}
