"""Middleware options are frozen, typed values: checked when a spec is validated (with the
field path), shown by `flowopt schema`, and the same values the middleware keep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pydantic
import pytest
import yaml
from click.testing import CliRunner

from flowopt import ConfigError, SpecError, registry
from flowopt.cache import CacheConfig, CacheMiddleware
from flowopt.cli import cli
from flowopt.middleware.base import MiddlewareBase, Use
from flowopt.middleware.options import MiddlewareOptions, make_options
from flowopt.resilience.backoff import Backoff, RetryBudget
from flowopt.resilience.retry import Retry, RetryOptions
from flowopt.resilience.stack import Resilience
from flowopt.routing.triage import Triage
from flowopt.spec import parse_spec
from flowopt.spec_schema import spec_json_schema

BACKEND = {"fake": {"model": "m"}}
STEPS = [{"name": "a", "prompt": "{input}"}]
TIERS = [{"name": "cheap", "backend": "default"}, {"name": "strong", "backend": "strong"}]


def _spec(*middleware: Any) -> dict[str, Any]:
    return {"backend": BACKEND, "steps": STEPS, "middleware": list(middleware)}


@pytest.mark.parametrize(
    ("entry", "field", "fragment"),
    [
        ({"cache": {"threshold": "high"}}, "middleware[0].cache.threshold", "valid number"),
        ({"retry": 0}, "middleware[0].retry.attempts", "greater than or equal to 1"),
        ({"retry": {"budget": {"ratio": 2}}}, "middleware[0].retry.budget.ratio", "less than"),
        ({"resilience": {"shed": {"max_queue": -1}}}, "resilience.shed.max_queue", "greater"),
        ({"fallback": {"stale_answers": {"max_age": 1}}}, "stale_answers.max_age", "Extra"),
        (
            {"ratelimit": {"requests_per_minute": 6, "store": "redsi"}},
            "ratelimit.store",
            "'memory'",
        ),
        ({"cascade": {"tiers": TIERS, "stream": "live"}}, "cascade.stream", "'buffer'"),
        (
            {"triage": {"tiers": TIERS, "classifier": {"rules": {"rules": [{"pattern": "x"}]}}}},
            "middleware[0].triage.classifier.rules.rules[0].then",
            "Field required",
        ),
        (
            {"triage": {"tiers": TIERS, "classifier": {"rulez": {}}}},
            "triage.classifier",
            "is rules",
        ),
        ({"logging": {"levle": "DEBUG"}}, "middleware[0].logging.levle", "Extra inputs"),
    ],
)
def test_bad_option_fails_spec_validation_with_its_path(
    entry: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(_spec(entry), source="p.yaml")
    assert field in (err.value.field or "")
    assert fragment in str(err.value) and "p.yaml" in str(err.value) and "hint:" in str(err.value)


def test_good_options_and_short_forms_validate() -> None:
    spec = parse_spec(
        _spec(
            {"retry": 3},
            {"fallback": ["strong"]},
            {"fallback": "strong"},
            {"deadline": 5},
            {"shed": 4},
            {"logging": "DEBUG"},
            {"cache": "memory"},
            {"resilience": {"retry": 2, "fallback": ["strong"], "breaker": False}},
            {"triage": {"tiers": {"cheap": {"backend": "default"}, "strong": None}}},
            {"triage": {"tiers": TIERS, "classifier": {"embedding": {"path": "router.npz"}}}},
        )
    )
    assert len(spec.middleware) == 10


def test_unknown_names_and_unmodelled_middleware_are_left_to_the_build() -> None:
    # an unknown name fails when built, with suggestions (not here)
    assert parse_spec(_spec({"loging": {"x": 1}})).middleware[0].target == "loging"

    class Free(MiddlewareBase):
        name: ClassVar[str] = "free"

        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    registry.middleware.register("free", Free)
    try:
        assert parse_spec(_spec({"free": {"anything": [1, 2]}})).middleware[0].options
        assert "free" in json.dumps(spec_json_schema()["properties"]["middleware"])
    finally:
        registry.middleware.unregister("free")


def test_python_objects_are_left_to_the_constructor() -> None:
    budget = RetryBudget()
    spec = parse_spec(_spec(Use("retry", budget=budget)))
    assert spec.middleware[0].options["budget"] is budget
    assert Retry(budget=budget).budget is budget


def test_schema_has_middleware_options() -> None:
    schema = spec_json_schema()
    shapes = schema["properties"]["middleware"]["items"]["anyOf"]
    by_name = {next(iter(s["properties"])): s["properties"] for s in shapes if "properties" in s}
    assert {"cache", "retry", "triage", "resilience", "noop"} <= set(by_name)
    defs = schema["$defs"]
    assert {"threshold", "store", "ttl_s"} <= set(defs["CacheConfig"]["properties"])
    assert defs["CacheConfig"]["properties"]["ttl_s"]["description"]
    assert {"attempts", "backoff", "budget"} <= set(defs["RetryOptions"]["properties"])
    assert {"tiers", "classifier", "threshold"} <= set(defs["TriageOptions"]["properties"])
    # the short form is in the schema: `retry: 3`
    retry_forms = by_name["retry"]["retry"]["anyOf"]
    assert {"type": "integer"} in [{"type": f.get("type")} for f in retry_forms]
    # the schema is itself valid JSON Schema and accepts a real spec
    jsonschema.validate(_spec({"retry": 3}, {"cache": {"threshold": 0.9}}, "noop"), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_spec({"cache": {"threshold": "high"}}), schema)


def test_cli_validate_and_schema(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_spec({"cache": {"threshold": "high"}})))
    out = CliRunner().invoke(cli, ["validate", str(bad)])
    assert out.exit_code == 2, out.output
    assert "middleware[0].cache.threshold" in out.output and str(bad) in out.output
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_spec({"retry": 3}, "noop")))
    assert CliRunner().invoke(cli, ["validate", str(good)]).exit_code == 0
    schema = json.loads(CliRunner().invoke(cli, ["schema"]).output)
    assert "RetryOptions" in schema["$defs"]


def test_options_are_frozen_values_kept_by_the_middleware() -> None:
    t = Triage(tiers=TIERS, threshold=0.6)
    assert t.options.threshold == 0.6 and t.thresholds == [0.6]
    with pytest.raises(pydantic.ValidationError):
        t.options.threshold = 0.1  # type: ignore[misc]
    r = Retry(RetryOptions(attempts=5), backoff={"base": 0.2})
    assert r.attempts == 5 and r.backoff == Backoff(base=0.2)
    c = CacheMiddleware(CacheConfig(top_k=2), semantic=False, model_identity="m")
    assert c.options is c.config and c.config.top_k == 2 and not c.config.semantic
    assert Resilience(retry=4).layer("retry").attempts == 4


def test_bad_options_from_python_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"'retry' rejected its options: field 'attempts'"):
        Retry(attempts=0)
    with pytest.raises(ConfigError, match=r"backoff\.base"):
        Retry(backoff={"base": -1})
    with pytest.raises(ConfigError, match="multiplier"):
        Backoff(multiplier=0.5)
    with pytest.raises(ConfigError, match="embedder_runtime"):
        CacheConfig(embedder_runtime="tensorflow")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"middleware\[2\]: 'cache' rejected its options"):
        Use("cache", threshold="high").instantiate(CacheMiddleware, where="middleware[2]")


def test_a_plugin_declares_its_options_model() -> None:
    class ShoutOptions(MiddlewareOptions):
        times: int = pydantic.Field(1, ge=1)
        """How many exclamation marks."""

    class Shout(MiddlewareBase):
        name: ClassVar[str] = "shout"
        positional: ClassVar[str | None] = "times"
        options_model: ClassVar[type[ShoutOptions]] = ShoutOptions

        def __init__(self, options: ShoutOptions | int | None = None, /, **kw: Any) -> None:
            self.options = make_options(
                ShoutOptions, options, kw, name=self.name, positional=self.positional
            )

    registry.middleware.register("shout", Shout)
    try:
        assert parse_spec(_spec({"shout": 3})).middleware[0].options["__positional__"] == 3
        with pytest.raises(SpecError, match=r"middleware\[0\]\.shout\.times"):
            parse_spec(_spec({"shout": 0}))
        defs = spec_json_schema()["$defs"]
        assert defs["ShoutOptions"]["properties"]["times"]["description"]
    finally:
        registry.middleware.unregister("shout")
