"""The ``compress`` middleware's knobs (one frozen value, checked before anything loads)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowopt.compress.scorer import Scorer
from flowopt.middleware.options import MiddlewareOptions, PyObject

__all__ = ["CompressOptions"]


class CompressOptions(MiddlewareOptions):
    """Options of the ``compress`` middleware (docs/compression.md)."""

    ratio: float = Field(3.0, ge=1.0)
    """Target compression of the marked content (original tokens / kept tokens)."""
    target_tokens: int | None = Field(None, ge=1)
    """A token budget for the marked content instead of a ratio."""
    max_ratio: float = Field(12.0, ge=1.0)
    """The floor on what survives: never keep less than 1/max_ratio of the marked content
    (fitting an over-long prompt included; beyond it the overflow policy's fallback)."""
    when: Literal["auto", "always", "never"] = "auto"
    """``auto``: only when the predicted saving beats ``margin_ms``; ``always``; ``never``
    (compress only to fit the model's window)."""
    margin_ms: float = Field(50.0, ge=0.0)
    """Predicted end-to-end saving a compression must beat, in milliseconds."""
    min_tokens: int = Field(300, ge=0)
    """Marked content shorter than this is never compressed (the step's fixed cost wins)."""
    roles: tuple[str, ...] = ("tool",)
    """Message roles whose whole text is compressible (never system/developer, never the
    last user message)."""
    keep_turns: int | None = Field(None, ge=0)
    """When set: user/assistant turns older than the last ``keep_turns`` are compressible."""
    coarse: bool = True
    """Drop whole passages least relevant to the question before pruning tokens."""
    ranker: Literal["minilm", "lm"] = "minilm"
    """Who ranks passages for the coarse step: all-MiniLM-L6-v2 cosine (the cache's
    embedder), or LongLLMLingua's question perplexity under the scorer LM."""
    overflow: Literal["compress", "map_reduce", "error"] = "compress"
    """A prompt over the model's window: compress it to fit, answer over chunks and merge
    (map-reduce), or refuse with a typed error that says by how much it is over."""
    max_model_len: int | None = Field(None, ge=1)
    """The model's window; default: read from the backend's ``/v1/models``."""
    output_reserve: int = Field(256, ge=0)
    """Tokens kept free for the answer when the request sets no ``max_tokens``."""
    window_slack: float = Field(0.1, ge=0.0, le=0.5)
    """Safety share of the window: the scorer's tokenizer is not the served model's."""
    prior_prefill_tps: float = Field(1000.0, gt=0)
    """Prefill tokens/s assumed for a backend before its answers are measured."""
    prior_cost_ms_per_token: float = Field(1.0, gt=0)
    """Compressor milliseconds per token assumed before it is measured (with ``calibrate``
    off; otherwise the first ``auto`` decision measures it)."""
    calibrate: bool = True
    """Before the first ``auto`` decision, run the selection once on a built-in sample and
    start the cost model from that measurement instead of the prior."""
    scorer: str | PyObject[Scorer] | None = None
    """The scorer: a local checkpoint directory (default: the converted SmolLM2-135M), or
    a :class:`~flowopt.compress.Scorer` object (Python only)."""
