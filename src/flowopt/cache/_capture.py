"""Consent to reuse a cached answer's content: the capture tag and the turns before it.

Why the cache records consent at write time: an entry is kept so it can be *replayed*; using
it for anything else (a distillation training set, :mod:`flowopt.distill`) needs the
pipeline's say-so, and the pipeline that wrote an entry may be long gone when it is read.
So when the pipeline captures content (``capture_content: true`` in its spec, or the process
default ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``; the same switch that lets
prompts onto spans), the entry is written with :data:`CAPTURE_TAG` and the turns before the
last user turn (system prompt, earlier turns: only their hash is in the partition) under
``response["context"]``. Without that switch the entry holds what replay needs and nothing
else, and no exporter may use it.
"""

from __future__ import annotations

from typing import Any

from flowopt.types import Request

__all__ = ["CAPTURE_TAG", "capture_context"]

CAPTURE_TAG = "flowopt:capture"
"""Entry tag meaning "the pipeline allowed this content to be kept" (do not rename)."""


def capture_context(request: Request) -> list[dict[str, Any]] | None:
    """The OpenAI-form messages before the last user turn of a plain chat ``request``
    (system prompt and earlier turns), or None when the request is not one whose answer
    can be reused on its own: a completion prompt, a conversation ending in something
    other than the user turn (an assistant prefill), or a user turn with non-text parts."""
    if request.prompt is not None or not request.messages:
        return None
    msgs = list(request.messages)
    last = msgs[-1]
    if last.role != "user" or last.has_non_text_parts:
        return None
    return [m.to_openai() for m in msgs[:-1]]
