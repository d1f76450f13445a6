"""Entry point of a flowopt-managed llama.cpp server: ``llama_cpp.server`` plus stream usage.

Run as a script by the interpreter of the llama.cpp venv (``.venv-llamacpp``), which has
``llama-cpp-python[server]`` and *not* flowopt, so this file imports nothing of flowopt::

    .venv-llamacpp/bin/python .../_llamacpp_serve.py --model FILE.gguf --port P ...

Every argument goes to ``python -m llama_cpp.server`` unchanged. Two things are added,
pinned to llama-cpp-python 0.3.36 (the version scripts/install.sh installs):

* **usage on streams**: llama-cpp-python ignores ``stream_options`` and never sends token
  counts on a stream, so a streamed answer would cost "0 tokens" in flowopt's accounting.
  The token generator is wrapped to count prompt and generated tokens (the same counts its
  non-streamed answers report: the end-of-generation token is not counted), and the chunk
  that carries ``finish_reason`` gets a ``usage`` object, as vLLM sends it.
* ``/v1/models`` says ``owned_by: llamacpp`` and ``max_model_len`` (the context size), as
  vLLM lists them, and answers without waiting for the model lock; ``/health`` answers
  200 (flowopt's readiness probe asks it first, as it does vLLM).

Requests are answered one at a time (the server holds one lock around the model).
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Iterator
from typing import Any

import llama_cpp
import llama_cpp.server.app as app

_COUNTS = "_flowopt_counts"


def _patch_generate() -> None:
    original = llama_cpp.Llama.generate

    def generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
        counts = [len(tokens), 0]
        setattr(self, _COUNTS, counts)
        vocab = self._model.vocab
        for token in original(self, tokens, *args, **kwargs):
            if not llama_cpp.llama_vocab_is_eog(vocab, token):
                counts[1] += 1
            yield token

    llama_cpp.Llama.generate = generate  # type: ignore[method-assign,assignment]


def _with_usage(llama: Any, chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for chunk in chunks:
        choices = chunk.get("choices") or []
        if any(c.get("finish_reason") for c in choices):
            prompt, completion = getattr(llama, _COUNTS, (0, 0))
            chunk = {
                **chunk,
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        yield chunk


def _patch_streams() -> None:
    for name in ("create_completion", "create_chat_completion"):
        original = getattr(llama_cpp.Llama, name)

        def method(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            out = _original(self, *args, **kwargs)
            if kwargs.get("stream"):
                return _with_usage(self, out)
            return out

        setattr(llama_cpp.Llama, name, method)


def _patch_routes() -> None:
    """``/v1/models`` without the model lock, plus ``/health``.

    The stock ``/v1/models`` waits for the lock every generation holds, so a health probe
    hangs while the server answers a long request (and, with ``interrupt_requests`` on,
    cuts off the stream it waits for). The listing only reads the settings, so it needs
    no lock.
    """

    async def get_models() -> dict[str, Any]:
        proxy = app._llama_proxy
        settings: dict[str, Any] = getattr(proxy, "_model_settings_dict", {})
        data: list[dict[str, Any]] = [
            {
                "id": alias,
                "object": "model",
                "owned_by": "llamacpp",
                "permissions": [],
                "max_model_len": getattr(model, "n_ctx", None),
            }
            for alias, model in settings.items()
        ]
        return {"object": "list", "data": data}

    async def health() -> dict[str, str]:
        return {"status": "ok"}

    auth = [app.Depends(app.authenticate)]
    app.router.routes[:] = [
        r for r in app.router.routes if getattr(r, "path", None) != "/v1/models"
    ]
    app.router.get("/v1/models", tags=["OpenAI V1"], dependencies=auth)(get_models)
    app.router.get("/health", include_in_schema=False)(health)


def main() -> None:
    _patch_generate()
    _patch_streams()
    _patch_routes()
    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
