"""Keep library progress bars out of the model loads flowopt does on its own account.

transformers draws a "Loading weights" progress bar on stderr for every ``from_pretrained``
(transformers 5). When flowopt loads a model internally — the semantic cache's MiniLM
embedder, its one-time ONNX export — that bar is noise in the caller's terminal or logs
(``flowopt demo`` printed it in the middle of a streamed answer). transformers has no
per-call switch, so :func:`no_load_progress` turns its global one off for the duration of
the load and restores it afterwards; loads the application does itself are untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["no_load_progress"]


@contextlib.contextmanager
def no_load_progress() -> Iterator[None]:
    """Hide transformers' progress bars inside the ``with`` block (a no-op without it)."""
    tf_logging: Any = None
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as tf_logging
    was_enabled = tf_logging is not None and bool(tf_logging.is_progress_bar_enabled())
    if was_enabled:
        tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            tf_logging.enable_progress_bar()
