"""The errors of ``flowopt distill``: each says what is wrong and how to fix it.

Both are :class:`~flowopt.errors.ConfigError` (exit status 2 from the command line): an
export fails before it writes anything, because of what it was asked to read.
"""

from __future__ import annotations

from flowopt.errors import ConfigError

__all__ = ["DistillError", "NothingToExportError"]


class DistillError(ConfigError):
    """A bad argument (``--since``, ``--source``, ``--holdout``) or a store that is not there."""

    code = "flowopt.distill"


class NothingToExportError(DistillError):
    """Every record was filtered out (or there were none): no file is written, because an
    empty training set is never what the caller wanted. The message counts each reason."""

    code = "flowopt.distill.empty"
