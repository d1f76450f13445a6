"""Read a spec file's YAML safely: bounded in size, time and memory, and every failure a
:class:`~flowopt.errors.SpecError` naming the file.

Why not ``yaml.safe_load``: it executes nothing, but it is not bounded. A 342-byte
"billion laughs" (aliases of aliases) stays small while PyYAML keeps the aliased nodes
shared, then grows without end as soon as anything walks it as a tree (``expand_env``
did); a recursive alias (``&a [*a]``) makes a cyclic structure every walk recurses into
forever; a 50 MB file keeps the pure-Python loader busy for minutes; a non-UTF-8 file, a
bad timestamp or a nesting past the recursion limit escaped as a traceback. So:

1. the file's size is checked before it is read (:data:`MAX_SPEC_BYTES`, overridable with
   ``load_spec(..., max_bytes=...)`` or ``$FLOWOPT_MAX_SPEC_BYTES``);
2. it is decoded as strict UTF-8 (the error names the byte offset);
3. it is *composed* (the node graph, aliases still shared) with libyaml's C parser when
   installed, and that graph is measured before anything is built from it: a cycle, a
   nesting past :data:`MAX_DEPTH` or more than :data:`MAX_NODES` values once every alias
   is expanded is refused;
4. only then is it constructed into Python values, with PyYAML's safe constructors
   (no ``!!python/*`` tag resolves), every constructor error typed.

A spec is still code: ``function:`` steps and routers import Python modules. These
bounds make a hostile file fail cleanly; they do not make an untrusted spec safe to run
(docs/security.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from flowopt.errors import SpecError

__all__ = ["MAX_DEPTH", "MAX_NODES", "MAX_SPEC_BYTES", "SIZE_ENV", "read_yaml"]

MAX_SPEC_BYTES = 1024 * 1024  # the largest example spec is ~4 KB
SIZE_ENV = "FLOWOPT_MAX_SPEC_BYTES"
MAX_DEPTH = 64  # nesting levels; real specs use fewer than 10
MAX_NODES = 100_000  # values once aliases are expanded; real specs have a few hundred

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _limit(max_bytes: int | None, source: str) -> int:
    if max_bytes is not None:
        return max_bytes
    raw = os.environ.get(SIZE_ENV)
    if not raw:
        return MAX_SPEC_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SpecError(
            f"{SIZE_ENV}={raw[:40]!r} is not a positive size in bytes",
            source=source,
            hint=f"set {SIZE_ENV} to a number of bytes, or unset it for {MAX_SPEC_BYTES}",
        )
    return value


def _read_text(path: Path, limit: int) -> str:
    source = str(path)
    try:
        size = path.stat().st_size
        if size > limit:
            raise _too_big(source, size, limit)
        with path.open("rb") as fh:
            raw = fh.read(limit + 1)  # the file may have grown since stat
    except OSError as exc:
        raise SpecError(
            f"cannot read the spec: {exc.strerror or exc}", source=source, hint="check the path"
        ) from None
    if len(raw) > limit:
        raise _too_big(source, len(raw), limit)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"the file is not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})",
            source=source,
            hint="save the spec as UTF-8",
        ) from None


def _too_big(source: str, size: int, limit: int) -> SpecError:
    return SpecError(
        f"the spec is {size} bytes, over the limit of {limit}",
        source=source,
        hint=f"a pipeline spec is a few KB; if this one is meant to be this big, raise "
        f"the limit with {SIZE_ENV} or load_spec(..., max_bytes=N)",
    )


def _measure(root: yaml.Node, source: str) -> None:
    """Refuse a cycle, nesting past MAX_DEPTH, or more than MAX_NODES expanded values.

    Expanded sizes are memoised per node, so a shared (aliased) node is measured once and
    the walk costs the size of the graph, not of its expansion."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_.discard(key)
            total = 1 + sum(sizes[id(c)] for c in _children(node))
            if total > MAX_NODES:
                raise SpecError(
                    f"the document expands to more than {MAX_NODES} values "
                    "(aliases of aliases: a 'billion laughs' document?)",
                    source=source,
                    hint="write the values out instead of aliasing them many times over",
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in open_:
            raise SpecError(
                "the document refers to itself (a recursive alias)",
                source=source,
                hint="an anchor cannot be used inside its own value",
            )
        if depth > MAX_DEPTH:
            raise SpecError(
                f"the document is nested deeper than {MAX_DEPTH} levels",
                source=source,
                hint="a pipeline spec needs a handful of levels",
            )
        open_.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def read_yaml(path: Path, *, max_bytes: int | None = None) -> Any:
    """The spec file's data, bounded as the module says; every failure a SpecError."""
    source = str(path)
    text = _read_text(path, _limit(max_bytes, source))
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(
            f"not valid YAML{where}: {str(problem)[:200]}",
            source=source,
            hint="check indentation and quoting around that line",
        ) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # PyYAML's constructors raise these for values they cannot build (a timestamp
        # like 2024-13-45, a bad !!binary, an unhashable mapping key)
        raise SpecError(
            f"a value cannot be read: {type(exc).__name__}: {str(exc)[:200]}",
            source=source,
            hint="quote the value to keep it a string",
        ) from None
    finally:
        loader.dispose()
