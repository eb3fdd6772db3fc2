# Set-up and everyday commands. `make quickstart` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# CPU build by default; for a GPU, e.g. `make TORCH="torch --index-url https://download.pytorch.org/whl/cu128"`
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install quickstart test test-slow lint docs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml examples/mmfuse-plugin-example/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps "borzoi-pytorch==0.5.1"
	$(BIN)/python -m pip install --quiet --no-deps -e examples/mmfuse-plugin-example  # tests run it as a real plugin
	touch $@

quickstart: install
	$(BIN)/mmfuse fit --config experiments/quickstart/config.yaml

test: install
	$(BIN)/python -m pytest -n auto --dist loadfile   # one worker per core; the tests of a file share one

test-slow: install   # one worker per core; groups and longest-first order in tests/conftest.py
	$(BIN)/python -m pytest -m slow -n auto --dist loadgroup --no-loadscope-reorder

lint: install
	$(BIN)/ruff check mmfuse tests

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/python docs/gen_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict   # site/ ; `mkdocs serve` to browse
