"""Spec validation, YAML round trip, Python == YAML, and the errors operators see."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import flowopt
from flowopt import ConfigError, SpecError, UnknownNameError, load, pipeline
from flowopt.spec import load_spec, parse_spec

BACKEND = {"fake": {"model": "m"}}
STEPS = [
    {"name": "draft", "prompt": "Q: {input}", "system": "be brief", "params": {"max_tokens": 8}},
    {"name": "polish", "prompt": "Improve: {draft}"},
]


def _yaml(tmp_path: Path, data: object, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_python_and_yaml_build_equal_pipelines(tmp_path: Path) -> None:
    py = pipeline(
        "support",
        backend=BACKEND,
        middleware=["noop", {"logging": "DEBUG"}],
        steps=STEPS,
        defaults={"temperature": 0},
    )
    path = _yaml(tmp_path, yaml.safe_load(py.to_yaml()))
    from_yaml = load(path)
    assert from_yaml == py
    assert from_yaml.to_yaml() == py.to_yaml()
    again = parse_spec(yaml.safe_load(from_yaml.to_yaml()))
    assert again == py.spec


def test_function_steps_round_trip_by_reference(tmp_path: Path) -> None:
    from tests.core.steps_fixture import shout

    py = pipeline("f", backend=BACKEND, steps=[{"name": "s", "function": shout}])
    assert "tests.core.steps_fixture:shout" in py.to_yaml()
    assert load(_yaml(tmp_path, yaml.safe_load(py.to_yaml()))) == py


def test_error_names_file_field_and_fix(tmp_path: Path) -> None:
    path = _yaml(tmp_path, {"backend": BACKEND, "steps": [{"name": "a", "promt": "x"}]})
    with pytest.raises(SpecError) as err:
        load_spec(path)
    msg = str(err.value)
    assert str(path) in msg and "steps[0].promt" in msg and "hint:" in msg


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsteps: [\n  - oops: : :\n")
    with pytest.raises(SpecError, match="line"):
        load_spec(path)


def test_missing_file() -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec("/nonexistent/spec.yaml")


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        ([{"name": "a", "prompt": "{nope}"}], r"uses \['nope'\]"),
        ([{"name": "a", "prompt": "x", "function": "m:f"}], "exactly one of"),
        ([{"name": "a", "prompt": "x"}, {"name": "a", "prompt": "y"}], "unique"),
        ([{"name": "a", "prompt": "x", "output": "input"}], "reserved"),
        ([{"name": "a", "prompt": "x", "backend": "strong"}], "not in 'backends'"),
        ([{"name": "bad name!", "prompt": "x"}], "letters, digits"),
        ([{"name": "a", "prompt": "{unclosed"}], "bad template"),
    ],
)
def test_step_errors(steps: list[dict[str, object]], fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        parse_spec({"backend": BACKEND, "steps": steps})


def test_unknown_middleware_suggests() -> None:
    with pytest.raises(UnknownNameError) as err:
        pipeline("x", backend=BACKEND, middleware=["loging"], steps=STEPS)
    assert "logging" in err.value.suggestions
    assert "did you mean 'logging'" in str(err.value)
    assert "middleware[0]" in str(err.value)


def test_unknown_backend_suggests() -> None:
    with pytest.raises(UnknownNameError, match="vllm"):
        pipeline("x", backend={"vlm": {}}, steps=STEPS)


def test_bad_backend_options_fail_at_build() -> None:
    with pytest.raises(ConfigError, match="needs base_url"):
        pipeline("x", backend={"vllm": {"model": "m"}}, steps=STEPS)
    with pytest.raises(ConfigError, match="rejected its options"):
        pipeline("x", backend={"vllm": {"base_url": "http://h", "colour": 1}}, steps=STEPS)


def test_bad_defaults_fail_at_build() -> None:
    with pytest.raises(ConfigError, match="invalid params"):
        pipeline("x", backend=BACKEND, steps=STEPS, defaults={"temperature": 9})
    with pytest.raises(ConfigError, match="invalid params"):
        pipeline("x", backend=BACKEND, steps=STEPS, defaults={"temprature": 0})


def test_bad_function_reference_fails_at_build() -> None:
    with pytest.raises(ConfigError, match="cannot import module"):
        pipeline("x", backend=BACKEND, steps=[{"name": "a", "function": "no.such.mod:f"}])
    with pytest.raises(ConfigError, match="has no attribute"):
        pipeline("x", backend=BACKEND, steps=[{"name": "a", "function": "flowopt:nope"}])


def test_unreachable_steps() -> None:
    with pytest.raises(ConfigError, match="can never run"):
        pipeline("x", backend=BACKEND, steps=STEPS, edges=[("START", "draft"), ("draft", "END")])


def test_env_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"backend": {"fake": {"model": "${MODEL_X:-dflt}"}}, "steps": STEPS}
    spec = load_spec(_yaml(tmp_path, data))
    assert spec.backend.options["model"] == "dflt"
    monkeypatch.setenv("MODEL_X", "from-env")
    assert load_spec(_yaml(tmp_path, data)).backend.options["model"] == "from-env"
    data["backend"] = {"fake": {"model": "${UNSET_VAR_FLOWOPT}"}}
    with pytest.raises(SpecError, match="UNSET_VAR_FLOWOPT is not set"):
        load_spec(_yaml(tmp_path, data))


def test_json_schema_exported() -> None:
    schema = flowopt.PipelineSpec.model_json_schema()
    assert "steps" in schema["properties"]


def test_public_api_is_exported() -> None:
    for name in flowopt.__all__:
        assert hasattr(flowopt, name), name


def test_yaml_on_key_trap_is_explained() -> None:
    data = yaml.safe_load(
        "backend: {fake: {}}\nsteps: [{name: a, prompt: x}, {name: b, prompt: y}]\n"
        "routes:\n  - from: a\n    on: a\n    cases: {x: b}\n"
    )
    with pytest.raises(SpecError, match="use 'key:'"):
        parse_spec(data)


def test_nested_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowopt.spec import expand_env

    monkeypatch.delenv("FLOWOPT_X_OUTER", raising=False)
    monkeypatch.setenv("FLOWOPT_X_INNER", "http://inner:1")
    assert expand_env("${FLOWOPT_X_OUTER:-${FLOWOPT_X_INNER:-http://d:2}}") == "http://inner:1"
    monkeypatch.delenv("FLOWOPT_X_INNER")
    assert expand_env("${FLOWOPT_X_OUTER:-${FLOWOPT_X_INNER:-http://d:2}}") == "http://d:2"
    monkeypatch.setenv("FLOWOPT_X_OUTER", "o")
    assert expand_env("${FLOWOPT_X_OUTER:-${FLOWOPT_X_INNER:-x}}/v1") == "o/v1"
