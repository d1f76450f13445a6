"""Function steps referenced by import path from the spec tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def shout(state: Mapping[str, Any]) -> str:
    return str(state["input"]).upper()


async def async_len(state: Mapping[str, Any]) -> int:
    return len(str(state["input"]))


def broken(state: Mapping[str, Any]) -> str:
    raise ValueError("step failed on purpose")
