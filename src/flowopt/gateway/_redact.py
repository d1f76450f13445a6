"""Secrets out of the access log: ``?api_key=...``, ``?key=...``, ``?token=...``.

Why a log filter: OpenAI clients send the key in the ``Authorization`` header, which no
log line shows, but some clients and hand-written scripts put it in the query string, and
uvicorn's access log writes the path with its query. The filter sits on uvicorn's access
logger itself, so whatever handler, format or level an application configures, the
record that reaches it already has the value replaced by ``[redacted]``.
"""

from __future__ import annotations

import logging
import re

__all__ = ["REDACTED", "QueryRedactor", "install_redaction", "redact_query"]

REDACTED = "[redacted]"
# Query parameter names whose values are secrets (case-insensitive, `-` or `_`).
_SECRET = re.compile(
    r"(?i)([?&;](?:api[-_]?key|key|token|access[-_]?token|auth|authorization|password|"
    r"secret|client[-_]?secret)=)[^&;#\s\"]*"
)


def redact_query(path: str) -> str:
    """``path`` with the value of every secret-looking query parameter replaced."""
    if "=" not in path:
        return path
    return _SECRET.sub(lambda m: m.group(1) + REDACTED, path)


class QueryRedactor(logging.Filter):
    """Rewrites string arguments (uvicorn passes the path with its query as one) and the
    message itself before any handler formats the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_query(record.msg)
        return True


def install_redaction(logger_name: str = "uvicorn.access") -> None:
    """Add the filter to ``logger_name`` once (idempotent)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, QueryRedactor) for f in logger.filters):
        logger.addFilter(QueryRedactor())
