# Two commands a newcomer needs: `make dev` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
AZURITE_VERSION := 3.37.0

.PHONY: dev test lint bench clean azurite mutate

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	touch $@

# Azurite (the Azure Storage emulator) for the storage tests. A failed install fails this target with the
# reason; `make test` then goes on without it on a laptop, and stops under CI=true (CI must run those tests).
.tools/node_modules/.bin/azurite:
	@command -v npm >/dev/null 2>&1 || { echo "Node.js (npm) not found: cannot install Azurite" >&2; exit 1; }
	npm install --silent --no-audit --no-fund --prefix .tools azurite@$(AZURITE_VERSION)
	@test -x $@ || { echo "npm finished but $@ is missing" >&2; exit 1; }

azurite: .tools/node_modules/.bin/azurite

dev: $(VENV)/.runtime
	$(PY) -m gateway dev

test: $(VENV)/.dev
	@$(MAKE) --no-print-directory azurite || { \
		if [ "$$CI" = "true" ]; then echo "CI=true: Azurite is required (see the error above)" >&2; exit 1; fi; \
		echo "Azurite not installed: its tests will be skipped (see the error above)" >&2; }
	$(PY) -m pytest

# Mutation testing of the code where a bug loses a scan or opens the gateway (setup.cfg [mutmut] names the
# modules and tests; docs/mutation.md records the scores). Long: not part of `make test` or CI.
mutate: $(VENV)/.dev
	rm -rf mutants
	set -f; $(VENV)/bin/mutmut run --max-children 2 $$(grep -v -e '^#' -e '^$$' tests/mutation_targets.txt)
	$(VENV)/bin/mutmut results

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(VENV)/.dev
	$(PY) -m bench

clean:
	rm -rf $(VENV) .tools .pytest_cache
