"""flowopt's OpenAI-compatible gateway: any OpenAI client can call a pipeline.

::

    flowopt serve pipeline.yaml --port 8000
    # then: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=...)

Needs the ``gateway`` extra (``pip install 'flowopt[gateway]'``: starlette, uvicorn,
prometheus-client). Names are imported lazily so ``import flowopt.gateway`` works without
them and the error says what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowopt.errors import MissingDependencyError

if TYPE_CHECKING:
    from flowopt.gateway.app import Gateway, create_app
    from flowopt.gateway.server import serve

__all__ = ["Gateway", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("Gateway", "create_app"):
        try:
            from flowopt.gateway import app
        except ImportError as exc:
            raise MissingDependencyError(
                exc.name or "starlette", "gateway", "the OpenAI-compatible gateway"
            ) from None
        return getattr(app, name)
    if name == "serve":
        from flowopt.gateway.server import serve

        return serve
    raise AttributeError(f"module 'flowopt.gateway' has no attribute {name!r}")
