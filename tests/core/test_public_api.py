"""The public API is what ``__all__`` says, in both directions.

- ``flowopt.__all__`` names exactly the public (non-underscore, non-module) attributes of
  the package: nothing exported by accident, nothing promised that is missing.
- Every public module (no path part starts with ``_``) declares ``__all__``; each name in
  it exists, and every public class or function defined in the module is in it. What is
  not public API lives in a private module (``_wire.py``) or has a leading underscore.
- ``RECOMMENDED_ORDER`` names only middleware that exist.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import pytest

import flowopt
from flowopt import registry


def _public_modules() -> list[str]:
    names = ["flowopt"]
    for info in pkgutil.walk_packages(flowopt.__path__, "flowopt."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return sorted(names)


def test_package_all_matches_its_public_attributes() -> None:
    declared = set(flowopt.__all__)
    assert len(declared) == len(flowopt.__all__), "duplicates in flowopt.__all__"
    missing = sorted(n for n in declared if not hasattr(flowopt, n))
    assert missing == []
    public = {
        n
        for n, v in vars(flowopt).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    # lazily resolved names (module __getattr__) are in __all__ but not yet in vars()
    assert sorted(public - declared) == []


@pytest.mark.parametrize("name", _public_modules())
def test_public_module_all_agrees_with_its_definitions(name: str) -> None:
    module = importlib.import_module(name)
    declared = getattr(module, "__all__", None)
    assert declared is not None, f"{name} is public but has no __all__"
    assert sorted(n for n in declared if not hasattr(module, n)) == []
    undeclared = sorted(
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == name
        and n not in declared
    )
    assert undeclared == [], f"{name}: public but not in __all__ (make them private or export)"


def test_recommended_order_names_registered_middleware() -> None:
    known = set(registry.middleware.names())
    assert [n for n in flowopt.RECOMMENDED_ORDER if n not in known] == []
