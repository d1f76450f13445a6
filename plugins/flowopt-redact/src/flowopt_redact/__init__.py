"""flowopt-redact: a flowopt middleware that replaces personal data in prompts with
placeholders before they reach the backend.

Registered as ``redact`` in the ``flowopt.middleware`` entry-point group, so a spec names
it without importing anything::

    middleware:
      - redact: [email, phone]

It is also the worked example of docs/plugins.md: one small class, one entry point, its
own tests with ``flowopt.testing``.
"""

from flowopt_redact.middleware import Redact, RedactOptions
from flowopt_redact.patterns import BUILTIN
from flowopt_redact.redactor import DEFAULT_KINDS, DEFAULT_PLACEHOLDER, Redaction, Redactor

__version__ = "0.1.0"

BUILTIN_KINDS: tuple[str, ...] = tuple(BUILTIN)
"""Names of the built-in kinds, in priority order."""

__all__ = [
    "BUILTIN_KINDS",
    "DEFAULT_KINDS",
    "DEFAULT_PLACEHOLDER",
    "Redact",
    "RedactOptions",
    "Redaction",
    "Redactor",
    "__version__",
]
