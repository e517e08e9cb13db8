# Two commands a newcomer needs: `make dev` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
AZURITE_VERSION := 3.37.0

.PHONY: dev test lint bench clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	touch $@

# Azurite (the Azure Storage emulator) for the storage tests, when Node.js is present.
.tools/node_modules/.bin/azurite:
	@if command -v npm >/dev/null 2>&1; then \
		npm install --silent --no-audit --no-fund --prefix .tools azurite@$(AZURITE_VERSION); \
	else echo "Node.js not found: Azurite tests will be skipped"; fi

azurite: .tools/node_modules/.bin/azurite

dev: $(VENV)/.runtime
	$(PY) -m gateway dev

test: $(VENV)/.dev
	@$(MAKE) --no-print-directory azurite || true
	$(PY) -m pytest

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(VENV)/.dev
	$(PY) -m bench

clean:
	rm -rf $(VENV) .tools .pytest_cache
