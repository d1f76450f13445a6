"""The prompt-layout check: request-specific text before static text is flagged."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from flowopt.cli.run import validate
from flowopt.prompt_layout import layout_warnings, step_layout
from flowopt.spec import StepSpec, parse_spec

POLICY = "Follow the refund policy. " * 20  # ~500 characters of static instructions


def _spec(system: str | None, prompt: str) -> dict[str, object]:
    step: dict[str, object] = {"name": "answer", "prompt": prompt}
    if system is not None:
        step["system"] = system
    return {"name": "layout", "backend": {"fake": {}}, "steps": [step]}


def test_static_text_first_is_fine() -> None:
    assert layout_warnings(parse_spec(_spec(POLICY, "{input}"))) == []
    assert layout_warnings(parse_spec(_spec(None, POLICY + "\nQuestion: {input}\nAnswer:"))) == []


def test_a_field_before_long_static_text_is_flagged() -> None:
    (w,) = layout_warnings(parse_spec(_spec("Customer: {user}\n" + POLICY, "{input}")))
    assert (w.step, w.field, w.where) == ("answer", "user", "system")
    assert w.static_chars >= 400
    assert "prefix cache" in str(w)
    # static text in the prompt after a field in the system prompt counts too
    (w2,) = layout_warnings(parse_spec(_spec("Topic: {input}", POLICY + "{input}")))
    assert w2.where == "system" and w2.static_chars >= 400


def test_a_short_suffix_is_not_worth_a_warning() -> None:
    step = StepSpec(name="s", prompt="{input}\nAnswer in one word:")
    assert step_layout(step) is None
    assert step_layout(step, min_static_chars=5) is not None


def test_flowopt_validate_warns_and_still_passes(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: v\nbackend: {fake: {}}\nsteps:\n"
        f"  - {{name: answer, system: 'Customer: {{user}}. {POLICY}', prompt: '{{input}}'}}\n"
    )
    result = CliRunner().invoke(validate, [str(spec)])
    assert result.exit_code == 0, result.output
    assert "warning: step 'answer'" in result.output and ": ok (" in result.output
