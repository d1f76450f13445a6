"""Test kit for flowopt users and plugin authors.

- :class:`FakeBackend` — a backend that answers from a function, no server (a fake: use it
  for unit tests of one component's logic, never as a stand-in in integration tests).
- :class:`SpanCapture` — collects finished spans in memory for assertions.
- :func:`run_middleware_conformance` — the checks every middleware must pass; a plugin
  runs it in its own CI.
- :class:`FaultProxy` / :class:`Fault` — a loopback HTTP proxy in front of a real server
  that injects 429/5xx, hangs, resets and mid-stream cuts on a schedule.
"""

from flowopt.testing.conformance import run_middleware_conformance
from flowopt.testing.fakes import FakeBackend
from flowopt.testing.faultproxy import Fault, FaultProxy
from flowopt.testing.spans import SpanCapture

__all__ = ["FakeBackend", "Fault", "FaultProxy", "SpanCapture", "run_middleware_conformance"]
