"""The pipeline spec: one validated, frozen description that Python and YAML both produce.

``pipeline(...)`` in Python and ``load("pipeline.yaml")`` build the same
:class:`PipelineSpec`, so two pipelines declared either way compare equal, and
:meth:`PipelineSpec.to_yaml` writes one back. Validation errors become
:class:`~flowopt.errors.SpecError` naming the file, the field path and the fix — never a
raw pydantic dump. Middleware options are checked here too, against the options model of
each registered middleware (:mod:`flowopt.middleware.options`), so a bad option fails with
its path (``middleware[0].cache.threshold``) before anything is built.
:func:`flowopt.spec_schema.spec_json_schema` is the spec's JSON Schema with every
registered middleware's options (``flowopt schema``), for editors.
"""

from __future__ import annotations

import importlib
import re
import string
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from flowopt import registry
from flowopt._batch_spec import BatchSettings
from flowopt._envsubst import expand_env
from flowopt._gateway_spec import DEFAULT_MAX_BODY_BYTES, GatewaySpec
from flowopt._spec_yaml import read_yaml
from flowopt._speculate_spec import SpeculateSpec, check_speculation
from flowopt.errors import ConfigError, SpecError
from flowopt.middleware.base import Use
from flowopt.middleware.options import describe_error, spec_options_errors

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "BatchSettings",
    "GatewaySpec",
    "PipelineSpec",
    "RouteSpec",
    "SpeculateSpec",
    "StepSpec",
    "TracingSpec",
    "expand_env",
    "load_spec",
    "parse_spec",
    "registered_class",
    "resolve_function",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_RESERVED = {"input", "user", "tenant"}
# state keys a step may not write: the inputs, and the chat of a chat input
_RESERVED_OUTPUTS = _RESERVED | {"messages"}


def _fn_ref(fn: Any) -> str:
    if isinstance(fn, str):
        if ":" not in fn:
            raise ValueError(f"function reference {fn!r} must look like 'package.module:function'")
        return fn
    module = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None)
    if not module or not qual:
        raise ValueError(f"{fn!r} is not a function")
    return f"{module}:{qual}"


def resolve_function(ref: str) -> Callable[..., Any]:
    """Import ``package.module:attr`` (function steps and routers in YAML)."""
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import module {module_name!r} for function {ref!r}: {exc}",
            hint="make sure the module is importable (installed, or on PYTHONPATH)",
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"module {module_name!r} has no attribute {attr!r}",
                hint=f"check the spelling of {ref!r}",
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{ref!r} is not callable", hint="point at a function")
    return obj  # type: ignore[no-any-return]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class StepSpec(_Frozen):
    """One node of the pipeline graph: an LLM call (``prompt``) or a Python function
    (``function``). ``output`` is the state key the result is written to (default: the
    step's name)."""

    name: str = Field(description="Unique step name; also the default output key.")
    prompt: str | None = Field(
        None, description="User-message template; {input} and earlier outputs are filled in."
    )
    system: str | None = Field(None, description="System-message template (LLM steps).")
    function: str | None = Field(
        None, description="'package.module:function' for a function step (gets the state)."
    )
    output: str | None = Field(None, description="State key for the result (default: name).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Sampling params overriding the pipeline defaults."
    )
    backend: str | None = Field(None, description="Named backend for this step (see backends).")
    pure: bool = Field(False, description="A function step with no side effects (speculable).")
    compressible: tuple[str, ...] = Field(
        (),
        description="Prompt-template fields whose values the compress middleware may "
        "shrink (retrieved passages, documents); never the system prompt.",
    )
    fn: Any = Field(None, exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _function_objects(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and callable(data.get("function")):
            data = dict(data)
            data["fn"] = data["function"]
            data["function"] = _fn_ref(data["function"])
        return data

    @model_validator(mode="after")
    def _check(self) -> StepSpec:
        if not _NAME.match(self.name):
            raise ValueError(f"step name {self.name!r} must be letters, digits, '_' or '-'")
        if (self.prompt is None) == (self.function is None):
            raise ValueError(f"step {self.name!r} needs exactly one of 'prompt' or 'function'")
        if self.function is not None:
            _fn_ref(self.function)
            if self.system is not None:
                raise ValueError(f"step {self.name!r}: 'system' only applies to prompt steps")
        if self.output_key in _RESERVED_OUTPUTS:
            raise ValueError(f"step {self.name!r} cannot write to reserved key {self.output_key!r}")
        if self.compressible:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.prompt or "") if f}
            for f in self.compressible:
                if f not in fields:
                    raise ValueError(
                        f"step {self.name!r}: compressible field {f!r} is not a field of its "
                        f"prompt template (fields: {sorted(fields) or 'none'}); system "
                        "templates are never compressed"
                    )
        for tpl in (self.prompt, self.system):
            if tpl is not None:
                try:
                    list(string.Formatter().parse(tpl))
                except ValueError as exc:
                    raise ValueError(
                        f"step {self.name!r}: bad template ({exc}); escape braces as {{{{ }}}}"
                    ) from None
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StepSpec):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def kind(self) -> Literal["llm", "function"]:
        return "llm" if self.prompt is not None else "function"

    @property
    def output_key(self) -> str:
        return self.output or self.name

    def template_id(self, pipeline_name: str) -> str:
        """A stable id of this step's prompt template: caches key on it, so an edited
        template never serves answers produced by the old one."""
        import hashlib

        raw = f"{self.system or ''}\x00{self.prompt or ''}"
        digest = hashlib.blake2b(raw.encode(), digest_size=6).hexdigest()
        return f"{pipeline_name}/{self.name}@{digest}"

    def template_fields(self) -> set[str]:
        fields: set[str] = set()
        for tpl in (self.prompt, self.system):
            if tpl:
                for _, fname, _, _ in string.Formatter().parse(tpl):
                    if fname:
                        fields.add(fname.split(".")[0].split("[")[0])
        return fields

    def callable(self) -> Callable[..., Any]:
        if self.fn is not None:
            return self.fn  # type: ignore[no-any-return]
        assert self.function is not None
        return resolve_function(self.function)


class RouteSpec(_Frozen):
    """Conditional routing after step ``source``: read state key ``key`` and go to the step
    named by the first matching case; ``default`` otherwise (or end the run)."""

    source: str = Field(alias="from", description="The step after which to branch.")
    key: str = Field(
        description="State key whose value picks the branch. (Not 'on': YAML 1.1 reads a bare "
        "'on' as the boolean true.)"
    )
    cases: dict[str, str] = Field(description="value -> next step name ('END' ends the run).")
    default: str | None = Field(None, description="Next step when no case matches.")
    match: Literal["exact", "contains"] = Field(
        "contains",
        description="'exact': normalised value equals the case; 'contains': the case word "
        "appears in the value (LLM output is rarely one clean word).",
    )
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_trap(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and (True in data or "on" in data):
            raise ValueError("routes use 'key:' for the state key ('on' reads as true in YAML)")
        return data

    def pick(self, value: Any) -> str:
        text = str(value).strip().lower()
        for case, target in self.cases.items():
            c = case.strip().lower()
            if text == c:
                return target
        if self.match == "contains":
            for case, target in self.cases.items():
                if re.search(rf"\b{re.escape(case.strip().lower())}\b", text):
                    return target
        return self.default or "END"


class TracingSpec(_Frozen):
    """This pipeline's tracing (it changes no other pipeline). ``exporter: none`` (the
    default) sends spans to the application's global provider; ``otlp``/``console`` give
    the pipeline a provider of its own with that exporter."""

    exporter: Literal["otlp", "console", "none"] = Field(
        "none",
        description="none: the application's (global) provider; otlp/console: a provider "
        "of this pipeline's own exporting there.",
    )
    endpoint: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    service_name: str | None = None
    capture_content: bool | None = Field(
        None,
        description="Record prompts/completions on this pipeline's spans. Unset: the "
        "process default (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT), else off.",
    )
    middleware_spans: bool = Field(True, description="One span per middleware hop.")


def _parse_use(value: Any, where: str) -> Use:
    try:
        return Use.parse(value, where=where)
    except ConfigError as exc:
        raise ValueError(exc.message) from None


def registered_class(name: str) -> Any:
    """The class registered as middleware ``name``, or None when that cannot be known
    yet (unknown name, a plugin that fails to import): building reports those."""
    try:
        return registry.middleware.load(name)
    except ConfigError:
        return None


def _check_middleware_options(uses: tuple[Use, ...]) -> None:
    """Validate each named middleware's options against its class's options model;
    all problems at once, located at ``middleware[i].name.field``."""
    errors: list[InitErrorDetails] = []
    for i, use in enumerate(uses):
        if isinstance(use.target, str) and use.options:
            cls = registered_class(use.target)
            errors += spec_options_errors(cls, use.options, (i, use.target))
    if errors:
        raise ValidationError.from_exception_data("middleware options", errors)


class PipelineSpec(_Frozen):
    """A whole pipeline. Middleware order is outermost first."""

    name: str = "pipeline"
    description: str | None = None
    backend: Use = Field(description="{name: {options}} of the default backend, e.g. vllm.")
    backends: dict[str, Use] = Field(
        default_factory=dict, description="Extra named backends (tiers) steps/middleware use."
    )
    middleware: tuple[Use, ...] = Field(default=(), description="Outermost first.")
    defaults: dict[str, Any] = Field(
        default_factory=dict, description="Sampling params for every LLM step."
    )
    steps: tuple[StepSpec, ...] = Field(min_length=1)
    edges: tuple[tuple[str, str], ...] | None = Field(
        None, description="[from, to] pairs; omitted: steps run in order."
    )
    routes: tuple[RouteSpec, ...] = ()
    speculate: tuple[SpeculateSpec, ...] = Field(default=(), description="Speculated edges.")
    tracing: TracingSpec = Field(default_factory=lambda: TracingSpec())
    gateway: GatewaySpec | None = Field(default=None, description="`flowopt serve` settings.")
    version: int = 1

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, v: Any) -> Use:
        return _parse_use(v, "backend")

    @field_validator("backends", mode="before")
    @classmethod
    def _backends(cls, v: Any) -> dict[str, Use]:
        if v is None:
            return {}
        if not isinstance(v, Mapping):
            raise ValueError("backends must be a mapping of name -> {backend: {options}}")
        return {k: _parse_use(b, f"backends.{k}") for k, b in v.items()}

    @field_validator("middleware", mode="before")
    @classmethod
    def _middleware(cls, v: Any) -> tuple[Use, ...]:
        if v is None:
            return ()
        if isinstance(v, str | Mapping):
            v = [v]
        if not isinstance(v, list | tuple):
            raise ValueError("middleware must be a list of {name: {options}} or names")
        uses = tuple(_parse_use(m, f"middleware[{i}]") for i, m in enumerate(v))
        _check_middleware_options(uses)
        return uses

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            return tuple(s.model_dump() | {"fn": s.fn} if isinstance(s, StepSpec) else s for s in v)
        return v

    @model_validator(mode="after")
    def _graph(self) -> PipelineSpec:
        names = [s.name for s in self.steps]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"step names must be unique; repeated: {sorted(dupes)}")
        known = set(names)
        outputs = {s.output_key for s in self.steps}
        for s in self.steps:
            if s.backend is not None and s.backend != "default" and s.backend not in self.backends:
                raise ValueError(
                    f"step {s.name!r} uses backend {s.backend!r}, which is not in 'backends' "
                    f"(have: {['default', *sorted(self.backends)]})"
                )
            missing = s.template_fields() - outputs - _RESERVED
            if missing:
                raise ValueError(
                    f"step {s.name!r} template uses {sorted(missing)}, which no step produces"
                    " (available: input, user, tenant and step outputs "
                    f"{sorted(outputs)})"
                )
        for a, b in self.edges or ():
            for n in (a, b):
                if n not in known and n not in ("START", "END"):
                    raise ValueError(f"edge [{a}, {b}] names unknown step {n!r}")
        sources = [r.source for r in self.routes]
        for r in self.routes:
            if sources.count(r.source) > 1:
                raise ValueError(
                    f"two routes leave step {r.source!r}; a step has at most one route "
                    "(put every case in it)"
                )
            if r.source not in known:
                raise ValueError(f"route from unknown step {r.source!r}")
            for t in [*r.cases.values(), *([r.default] if r.default else [])]:
                if t not in known and t != "END":
                    raise ValueError(f"route from {r.source!r} goes to unknown step {t!r}")
        check_speculation(self)
        return self

    # -- YAML round trip ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (what :meth:`to_yaml` writes); raises ConfigError for Python-only
        parts (middleware given as objects)."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["backend"] = self.backend.to_spec()
        if self.backends:
            out["backends"] = {k: v.to_spec() for k, v in self.backends.items()}
        if self.middleware:
            out["middleware"] = [m.to_spec() for m in self.middleware]
        if self.defaults:
            out["defaults"] = dict(self.defaults)
        out["steps"] = [s.model_dump(exclude_defaults=True, exclude={"fn"}) for s in self.steps]
        if self.edges is not None:
            out["edges"] = [list(e) for e in self.edges]
        if self.routes:
            out["routes"] = [
                r.model_dump(by_alias=True, exclude_defaults=True) for r in self.routes
            ]
        if self.speculate:
            out["speculate"] = [e.to_dict() for e in self.speculate]
        tracing = self.tracing.model_dump(exclude_defaults=True)
        if tracing:
            out["tracing"] = tracing
        if self.gateway is not None:
            out["gateway"] = self.gateway.to_dict()
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def _spec_error(exc: ValidationError, source: str | None) -> SpecError:
    field, msg, hint = describe_error(exc)
    return SpecError(msg, source=source, field=field or None, hint=hint)


def parse_spec(data: Any, *, source: str | None = None) -> PipelineSpec:
    """Validate plain data into a :class:`PipelineSpec` (raises SpecError)."""
    if not isinstance(data, Mapping):
        raise SpecError(
            f"a pipeline spec must be a mapping, got {type(data).__name__}",
            source=source,
            hint="start the file with 'name: ...', 'backend: ...', 'steps: [...]'",
        )
    try:
        return PipelineSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise _spec_error(exc, source) from None


def load_spec(path: str | Path, *, max_bytes: int | None = None) -> PipelineSpec:
    """Read and validate a YAML (or JSON) spec file; ``${VAR:-default}`` is expanded.

    The file is read within bounds (size, nesting, alias expansion:
    :mod:`flowopt._spec_yaml`; ``max_bytes`` overrides the size limit), and every failure,
    from a missing file to a wrong option type, is a :class:`SpecError` naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise SpecError(f"no such file: {p}", source=str(p), hint="check the path")
    data = read_yaml(p, max_bytes=max_bytes)
    return parse_spec(expand_env(data, source=str(p)), source=str(p))
