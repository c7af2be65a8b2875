# Raydeck: `make demo` and `make test` set themselves up on a fresh machine (Python 3.11 + pip).
# Debian's interpreter when present: it lives outside /root, so the unprivileged OS user that
# runs Ray processes (SECURITY.md) can execute the venv built from it.
PYTHON ?= $(shell test -x /usr/bin/python3.11 && echo /usr/bin/python3.11 || echo python3.11)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit bench lock clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m raydeck.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# Lint and types first (fast), then every test, slow and Ray ones included.
test: lint typecheck
	$(BIN)/python -m pytest -v --durations=15

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not ray"

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# Re-pin after changing dependencies in pyproject.toml.
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v "^-e" > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
