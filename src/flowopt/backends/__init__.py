"""Backends: the transports at the bottom of every middleware stack."""

from flowopt.backends.base import Backend, ModelInfo

__all__ = ["Backend", "ModelInfo"]
