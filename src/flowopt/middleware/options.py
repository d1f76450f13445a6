"""Typed middleware options: one frozen value per middleware, checked before it is built.

After LangGraph's ``RetryPolicy``/``CachePolicy``: a middleware's knobs are a small frozen
value object with a docstring per field (the docstrings become the JSON Schema's
descriptions). A middleware class names its model in ``options_model``; then

- ``flowopt validate`` and :func:`~flowopt.spec.parse_spec` check a spec's options against
  it (with the field path, e.g. ``middleware[0].cache.threshold``) without building the
  pipeline: no model is loaded and nothing is contacted;
- ``flowopt schema`` shows the options of every registered middleware;
- the constructor validates keyword options through it and keeps the frozen value
  (``self.options``), so Python and YAML are checked by the same code.

Fields that hold Python objects (a classifier object, a shared retry budget, a store) are
marked with :data:`PyObject`: Python callers may pass them, YAML cannot, so the schema does
not show them and spec validation leaves options whose values are Python objects to the
constructor. Middleware without an ``options_model`` (older plugins) keep working: their
options are checked only when they are built, by their own ``__init__``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, ValidationError
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError, core_schema

from flowopt.errors import ConfigError

__all__ = [
    "MiddlewareOptions",
    "PyObject",
    "config_error",
    "describe_error",
    "error_path",
    "make_options",
    "options_model_of",
    "spec_options_errors",
    "validate_options",
]

M = TypeVar("M", bound=BaseModel)

_HINTS = {
    "missing": "add this field",
    "extra_forbidden": "remove it, or check its spelling against `flowopt schema`",
    "unexpected_keyword_argument": "remove it, or check its spelling against `flowopt schema`",
    "too_short": "add at least one entry",
}
# loc parts pydantic adds for the member of a union that was tried: not field names
_TYPE_TAGS = {"bool", "int", "float", "str", "none", "list", "dict", "tuple"}
_MISMATCH = {"is_instance_of", "none_required", "model_attributes_type"}


class MiddlewareOptions(BaseModel):
    """Base of middleware option models: frozen, unknown keys refused, a docstring per
    field. Building one directly with a bad value raises :class:`ConfigError`."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        arbitrary_types_allowed=True,
    )
    _model_names: ClassVar[set[str]] = set()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        MiddlewareOptions._model_names.add(cls.__name__)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self).__name__) from None

    # Only a direct call ``Options(...)`` goes through ``__init__``; validation from data
    # (``model_validate``, a nested field) must keep pydantic's own errors and locations.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


class _InstanceOf:
    """Accept an instance of the annotated type as is (no schema of its own)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(source)


T = TypeVar("T")
PyObject = Annotated[T, _InstanceOf(), SkipJsonSchema()]
"""``PyObject[T]``: an instance of ``T`` passed from Python (a classifier, a shared retry
budget, a store). YAML cannot hold one, so it is left out of the JSON Schema."""


def _is_tag(part: str) -> bool:
    """A loc part naming the union member pydantic tried, not a field or key."""
    return (
        not part.isidentifier()
        or part in _TYPE_TAGS
        or part in MiddlewareOptions._model_names
        or part.startswith("function-")
    )


def error_path(loc: tuple[int | str, ...]) -> str:
    """``('middleware', 0, 'cache', 'threshold')`` -> ``middleware[0].cache.threshold``,
    leaving out the union-member tags pydantic puts in the location."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _is_tag(part):
            out += ("." if out else "") + part
    return out


def _is_mismatch(err: ErrorDetails) -> bool:
    """The input is not of this (union member's) type at all."""
    kind = err["type"]
    return kind.endswith(("_type", "_parsing")) or kind in _MISMATCH


def describe_error(exc: ValidationError, prefix: str = "") -> tuple[str, str, str]:
    """The main problem of ``exc`` as (field path, message, hint). For a value that
    matched no member of a union, that is the deepest problem (``retry.attempts`` rather
    than "retry is not a boolean"), or, when the value fits no member at all, every
    member's complaint in one message; the failed members are not counted as more
    problems."""
    errors = exc.errors()
    paths = [error_path(tuple(e["loc"])) for e in errors]
    best = max(
        range(len(errors)),
        key=lambda i: (paths[i].count(".") + paths[i].count("["), not _is_mismatch(errors[i])),
    )
    err, field = errors[best], paths[best]
    same = [e for e, p in zip(errors, paths, strict=True) if p == field]
    if _is_mismatch(err) and len(same) > 1 and all(_is_mismatch(e) for e in same):
        msg = "; or ".join(dict.fromkeys(str(e["msg"]) for e in same))
    else:
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    hint = _HINTS.get(err["type"], "see docs/spec.md for the field's format")
    leaves = {p for p in paths if not any(q != p and q.startswith(p) for q in paths)}
    others = leaves - {field}
    if others:
        msg += f" (and {len(others)} more problem{'s' if len(others) > 1 else ''})"
    if prefix:
        field = f"{prefix}.{field}" if field else prefix
    return field, msg, hint


def config_error(exc: ValidationError, what: str) -> ConfigError:
    """``exc`` as a :class:`ConfigError`: ``what``, the field path, the problem, a fix."""
    field, msg, hint = describe_error(exc)
    if "flowopt schema" not in hint:
        hint += f"; `flowopt schema` lists the options of {what}"
    return ConfigError(f"{what}: field '{field}': {msg}" if field else f"{what}: {msg}", hint=hint)


def validate_options(
    model: type[M], options: Mapping[str, Any], *, name: str, where: str | None = None
) -> M:
    """``model.model_validate(options)``; a failure is a :class:`ConfigError` naming the
    middleware, the option's path and the fix."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        err = config_error(exc, repr(name))
        err.message = err.message.replace(f"{name!r}:", f"{name!r} rejected its options:", 1)
        if where:
            err.message = f"{where}: {err.message}"
        raise err from None


def make_options(
    model: type[M],
    value: Any,
    kwargs: Mapping[str, Any],
    *,
    name: str,
    positional: str | None = None,
) -> M:
    """What a middleware constructor does with ``(value, /, **kwargs)``: ``value`` is a
    ready options value (``kwargs`` override fields of it), or the short-form option
    (``positional``), or None."""
    if isinstance(value, model):
        if not kwargs:
            return value
        return validate_options(model, {**dict(value), **kwargs}, name=name)
    options = dict(kwargs)
    if value is not None:
        if positional is None:
            raise ConfigError(
                f"{name!r} takes no short-form value (got {value!r})",
                hint=f"write '{name}: {{option: value}}'",
            )
        options[positional] = value
    return validate_options(model, options, name=name)


def options_model_of(cls: Any) -> type[BaseModel] | None:
    """The ``options_model`` a middleware class declares, if any."""
    model = getattr(cls, "options_model", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model
    return None


def _plain(value: Any) -> bool:
    """YAML-shaped data (no Python objects)."""
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return False


def spec_options_errors(
    cls: Any, options: Mapping[str, Any], loc: tuple[int | str, ...]
) -> list[InitErrorDetails]:
    """Check the plain-data options of one middleware entry against its class's model;
    the problems as pydantic error details located under ``loc`` (empty when fine, when
    the class has no model, or when its short form cannot apply: the build reports that).
    Options holding Python objects are left to the constructor."""
    model = options_model_of(cls)
    if model is None:
        return []
    opts = {k: v for k, v in options.items() if _plain(v)}
    if "__positional__" in opts:
        key = getattr(cls, "positional", None)
        if key is None:
            return []
        opts[key] = opts.pop("__positional__")
    try:
        model.model_validate(opts)
    except ValidationError as exc:
        out: list[InitErrorDetails] = []
        for err in exc.errors():
            if err["type"] == "missing" and len(opts) < len(options):
                continue  # an object given from Python may stand in for it
            out.append(
                InitErrorDetails(
                    type=PydanticCustomError(err["type"], err["msg"]),
                    loc=(*loc, *err["loc"]),
                    input=err.get("input"),
                )
            )
        return out
    return []
