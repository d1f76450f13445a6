"""Which model names the gateway serves, and what each one runs.

A client names a model; the gateway answers with one of:

- a **backend** of the pipeline (the default one, or a named tier): the request goes
  through the middleware stack once (``Pipeline.acall``). The default backend's model is
  the pipeline's entry point (triage may send the request to another tier); another
  tier's model pins the request to that tier. Its name is the model the
  backend serves (``/v1/models`` of vLLM, e.g. ``smollm2``); the backend's name in the spec
  (``default``, ``fast``...) is accepted as an alias.
- the **graph**: the whole multi-step pipeline runs on the last user message
  (``Pipeline.ainvoke``), exposed under the pipeline's name unless the spec's
  ``gateway.expose_graph`` is false.
- an **embedding model** (``all-MiniLM-L6-v2``, :mod:`flowopt.gateway._embeddings`): listed,
  answered by ``POST /v1/embeddings`` only; naming it on a generation route is a 400.

Served ids are read from each backend once and cached; when a backend is down at start-up
the configured model name is used and the lookup is retried at the next request.

``GET /v1/models`` lists a backend's model with the engine's own entry (``owned_by``,
``root``, ``parent``, ``max_model_len``, ``permission``...: what a client would read from the
engine directly), then the graph model and the embedding models, which flowopt itself
serves (``owned_by: flowopt``, and a ``flowopt`` field saying which kind they are).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flowopt.backends.base import Backend
from flowopt.errors import FlowoptError
from flowopt.gateway.errors import HTTPProblem
from flowopt.messages import thaw

__all__ = ["ModelTable", "Target"]

_log = logging.getLogger("flowopt.gateway")


@dataclass(frozen=True, slots=True)
class Target:
    """What a model name runs: ``kind`` "backend" (with ``backend`` name) or "graph"."""

    kind: Literal["backend", "graph"]
    model: str
    backend: str = "default"

    @property
    def pin(self) -> str | None:
        """The backend a request for this model is pinned to: ``None`` for the default
        backend's model (the pipeline's entry point, where triage or a cascade may still
        choose a tier), the tier's name when a client names another tier's model (no
        layer re-routes it)."""
        return None if self.backend == "default" else self.backend


class ModelTable:
    """Model name -> :class:`Target`, plus the ``/v1/models`` listing."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        graph_model: str | None,
        embedding_models: Sequence[str] = (),
    ) -> None:
        self._backends = dict(backends)
        self._graph = graph_model
        self._embedding = tuple(embedding_models)
        self._ids: dict[str, str] = {}  # backend name -> served model id
        self._entries: dict[str, dict[str, Any]] = {}  # backend name -> engine's entry
        self._created = int(time.time())
        # name -> Target for the names that resolved, once every backend's served id is
        # known: built once per name, not per request
        self._resolved: dict[str | None, Target] = {}

    async def refresh(self) -> None:
        """Ask each backend which model it serves (quietly keeps going when one is down)."""
        for name, backend in self._backends.items():
            if name in self._ids:
                continue
            try:
                info = await backend.model_info()
            except FlowoptError as exc:
                _log.warning("backend %r did not say which model it serves: %s", name, exc.code)
                continue
            self._ids[name] = info.id
            self._entries[name] = thaw(info.entry)
            self._resolved.clear()

    def _served(self, name: str) -> str:
        served = self._ids.get(name) or getattr(self._backends[name], "model", None)
        return str(served or name)

    def resolve(self, model: str | None) -> Target:
        """The target of a requested model name (None: the default backend)."""
        known = self._resolved.get(model)
        if known is not None:
            return known
        target = self._resolve(model)  # an unknown name raises: only served names stay
        if len(self._ids) == len(self._backends):  # every served id known: names settled
            self._resolved[model] = target
        return target

    def _resolve(self, model: str | None) -> Target:
        if model is None:
            return Target("backend", self._served("default"), "default")
        if self._graph is not None and model == self._graph:
            return Target("graph", model)
        for name in self._backends:
            if model == self._served(name) or model == name:
                return Target("backend", model, name)
        if model in self._embedding:
            raise HTTPProblem(
                400,
                f"{model!r} is an embedding model: send it to POST /v1/embeddings",
                param="model",
            )
        raise HTTPProblem(
            404,
            f"the model {model!r} does not exist here; GET /v1/models lists {self.names()}",
            code="model_not_found",
            param="model",
        )

    def names(self) -> list[str]:
        out: list[str] = []
        for name in self._backends:
            served = self._served(name)
            if served not in out:
                out.append(served)
        if self._graph is not None:
            out.append(self._graph)
        out.extend(m for m in self._embedding if m not in out)
        return out

    def listing(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = []
        seen: set[str] = set()
        for name in self._backends:
            served = self._served(name)
            if served in seen:
                continue
            seen.add(served)
            entry = self._entries.get(name)
            data.append(
                {**entry, "id": served}
                if entry
                else self._own(served, "backend")  # the engine did not answer yet
            )
        if self._graph is not None and self._graph not in seen:
            seen.add(self._graph)
            data.append(self._own(self._graph, "graph"))
        data.extend(self._own(m, "embedding") for m in self._embedding if m not in seen)
        return {"object": "list", "data": data}

    def _own(self, model: str, kind: str) -> dict[str, Any]:
        return {
            "id": model,
            "object": "model",
            "created": self._created,
            "owned_by": "flowopt",
            "flowopt": {"kind": kind},
        }
