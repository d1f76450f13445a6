"""Name registries fed by entry points: how YAML names become classes.

Why names and not import paths: a spec that names ``myapp.evil:Thing`` can import anything;
a registry only knows what installed distributions declared (Haystack learned this the hard
way). Built-ins are registered exactly like plugins, through flowopt's own entry points, so
there is one path for both and ``flowopt plugins list`` shows all of them with their origin.

Groups: ``flowopt.middleware``, ``flowopt.backends``, ``flowopt.stores``.
Unknown names fail with close-match suggestions; two distributions claiming one name fail
naming both (never "last one wins").
"""

from __future__ import annotations

import difflib
import inspect
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from flowopt.errors import ConfigError, PluginConflictError, UnknownNameError

if TYPE_CHECKING:
    from flowopt.middleware.base import Use

__all__ = [
    "GROUPS",
    "Registry",
    "RegistryEntry",
    "backends",
    "guessers",
    "instantiate",
    "middleware",
    "stores",
]

GROUPS = {
    "middleware": "flowopt.middleware",
    "backend": "flowopt.backends",
    "store": "flowopt.stores",
    "guesser": "flowopt.guessers",
}


@dataclass(frozen=True)
class RegistryEntry:
    """One registered name: where it points and which distribution declared it."""

    kind: str
    name: str
    value: str
    distribution: str
    entry_point: EntryPoint | None = None
    obj: Any = None

    def load(self) -> Any:
        if self.obj is not None:
            return self.obj
        assert self.entry_point is not None
        try:
            return self.entry_point.load()
        except ImportError as exc:
            raise ConfigError(
                f"{self.kind} {self.name!r} (from {self.distribution}) failed to import: {exc}",
                hint=f"install what {self.distribution} needs, or reinstall it",
            ) from exc


class Registry:
    """Names of one kind. Entry points are read once, lazily; ``register`` adds names in
    process (tests, notebooks) with the same conflict rules."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.group = GROUPS[kind]
        self._entries: dict[str, RegistryEntry] | None = None
        self._local: dict[str, RegistryEntry] = {}
        self._lock = threading.Lock()

    def _scan(self) -> dict[str, RegistryEntry]:
        if self._entries is not None:
            return self._entries
        with self._lock:
            if self._entries is not None:
                return self._entries
            found: dict[str, RegistryEntry] = {}
            seen: set[tuple[str, str, str]] = set()
            for ep in entry_points(group=self.group):
                dist = ep.dist.name if ep.dist is not None else "(unknown distribution)"
                key = (ep.name, ep.value, dist)
                if key in seen:  # the same distribution visible twice on sys.path
                    continue
                seen.add(key)
                entry = RegistryEntry(self.kind, ep.name, ep.value, dist, ep)
                prior = found.get(ep.name)
                if prior is not None and prior.value != ep.value:
                    raise PluginConflictError(
                        f"{self.kind} name {ep.name!r} is claimed by two distributions: "
                        f"{prior.distribution} ({prior.value}) and {dist} ({ep.value})",
                        hint="uninstall one of them, or ask one plugin to rename its entry point",
                    )
                found[ep.name] = entry
            self._entries = found
            return found

    def entries(self) -> dict[str, RegistryEntry]:
        merged = dict(self._scan())
        merged.update(self._local)
        return merged

    def names(self) -> list[str]:
        return sorted(self.entries())

    def register(self, name: str, obj: Any, *, distribution: str = "(in-process)") -> None:
        """Register ``obj`` under ``name`` in this process (plugins use entry points)."""
        existing = self.entries().get(name)
        if existing is not None and existing.obj is not obj:
            raise PluginConflictError(
                f"{self.kind} name {name!r} is already registered by {existing.distribution}"
                f" ({existing.value}); {distribution} cannot claim it too",
                hint="pick another name",
            )
        value = f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"
        self._local[name] = RegistryEntry(self.kind, name, value, distribution, None, obj)

    def unregister(self, name: str) -> None:
        self._local.pop(name, None)

    def get(self, name: str) -> RegistryEntry:
        entries = self.entries()
        entry = entries.get(name)
        if entry is None:
            known = sorted(entries)
            suggestions = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            raise UnknownNameError(self.kind, name, known, suggestions)
        return entry

    def load(self, name: str) -> Any:
        return self.get(name).load()


middleware = Registry("middleware")
backends = Registry("backend")
stores = Registry("store")
guessers = Registry("guesser")  # speculation guessers (flowopt.speculate.guessers)


def instantiate(use: Use, kind: str, where: str) -> Any:
    """Build the object a :class:`~flowopt.middleware.base.Use` record describes: a
    registered name is loaded from this module's registries (looked up at call time, so a
    test may swap a registry), a class is called with the options, an object is used as is.
    """
    target = use.target
    if isinstance(target, str):
        try:
            reg: Registry = globals()[
                {"middleware": "middleware", "backend": "backends", "guesser": "guessers"}[kind]
            ]
            cls = reg.load(target)
        except ConfigError as exc:
            exc.message = f"{where}: {exc.message}"
            raise
        return use.instantiate(cls, where=where)
    if inspect.isclass(target):
        return use.instantiate(target, where=where)
    if use.options:
        raise ConfigError(
            f"{where}: options were given for an already-built object {target!r}",
            hint="pass the class (or a registered name) with options, or the object alone",
        )
    return target
