"""Plugins by entry point, end to end through the registry and a YAML spec.

Uses the real example plugin ``flowopt-redact`` (plugins/flowopt-redact), which CI installs
with ``pip install -e plugins/flowopt-redact --no-deps``. Without it these tests fail and
say so: the point is to prove a separately installed distribution is picked up by name.

The conflict test builds a throwaway second distribution: a ``*.dist-info`` folder with
``METADATA`` and ``entry_points.txt`` in a temporary directory put on ``sys.path``. That is
all ``importlib.metadata`` needs to discover a distribution (its path finder scans every
``sys.path`` entry for ``*.dist-info``), so nothing is installed and nothing is left behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import flowopt
from flowopt import registry
from flowopt.errors import PluginConflictError, UnknownNameError
from flowopt.registry import Registry

SPEC = """\
name: plugin-by-name
backend: fake
middleware:
  - {middleware}
steps:
  - name: answer
    prompt: "{{input}}"
"""


def _write_spec(tmp_path: Path, middleware: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(middleware=middleware), encoding="utf-8")
    return path


@pytest.fixture
def redact_installed() -> None:
    entry = registry.middleware.entries().get("redact")
    if entry is None:
        pytest.fail(
            "the example plugin is not installed: "
            "pip install -e plugins/flowopt-redact --no-deps -c constraints.txt",
            pytrace=False,
        )


@pytest.mark.usefixtures("redact_installed")
async def test_plugin_is_used_by_name_in_a_yaml_spec(tmp_path: Path) -> None:
    entry = registry.middleware.get("redact")
    assert entry.distribution == "flowopt-redact"
    pipe = flowopt.load(_write_spec(tmp_path, "redact: [email, phone]"))
    assert [name for name, _ in pipe.middleware] == ["redact"]
    assert type(pipe.middleware[0][1]) is entry.load()
    async with pipe:
        # backend `fake` echoes what it received, so the text shows what was sent.
        result = await pipe.ainvoke("reach me at ann@example.org or 555-123-4567")
    assert result.text == "echo: reach me at [EMAIL] or [PHONE]"
    (decision,) = result.decisions
    assert (decision.middleware, decision.action) == ("redact", "redacted")
    assert dict(decision.detail) == {"total": 2, "email": 1, "phone": 1}
    # The name (not an import path) is what round-trips back to YAML.
    assert yaml.safe_load(pipe.to_yaml())["middleware"] == [{"redact": ["email", "phone"]}]


@pytest.mark.usefixtures("redact_installed")
def test_unknown_middleware_name_fails_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError) as info:
        flowopt.load(_write_spec(tmp_path, "redcat"))
    err = info.value
    assert err.name == "redcat" and err.suggestions[0] == "redact"
    assert "middleware[0] (redcat)" in str(err)
    assert "did you mean 'redact'" in str(err)
    assert "flowopt plugins list" in str(err)


def _fake_distribution(root: Path, name: str, group: str, entry: str) -> None:
    dist_info = root / f"{name.replace('-', '_')}-9.9.9.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 9.9.9\n", encoding="utf-8"
    )
    (dist_info / "entry_points.txt").write_text(f"[{group}]\n{entry}\n", encoding="utf-8")


@pytest.mark.usefixtures("redact_installed")
def test_two_distributions_claiming_one_name_fail_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_distribution(
        tmp_path / "site",
        "flowopt-redact-impostor",
        "flowopt.middleware",
        "redact = impostor_redact:Redact",
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    # The process-wide registry read entry points once already; a fresh one rescans.
    monkeypatch.setattr(registry, "middleware", Registry("middleware"))

    with pytest.raises(PluginConflictError) as info:
        flowopt.load(_write_spec(tmp_path, "redact"))
    message = str(info.value)
    assert "'redact'" in message
    assert "flowopt-redact (flowopt_redact.middleware:Redact)" in message
    assert "flowopt-redact-impostor (impostor_redact:Redact)" in message
    assert info.value.code == "flowopt.plugin_conflict"


def test_throwaway_distribution_is_gone_after_the_test() -> None:
    # Guards the test above: its sys.path entry and registry swap must not leak.
    for reg in (registry.middleware, Registry("middleware")):
        assert all(e.distribution != "flowopt-redact-impostor" for e in reg.entries().values())
