# Chatter: `make run` brings the whole platform up; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test bench lint format clean-data

install: $(STAMP)

# Re-installs only when the dependency list changes, so a second `make run` starts at once.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Chatter needs Python 3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing dependencies into $(VENV) (first run only)..."
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@# torch first, pinned: left to the resolver it picks a multi-GB CUDA build.
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check 'torch==2.13.0'
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: install
	@$(BIN)/python manage.py serve

test: install
	@$(BIN)/ruff check .
	@$(BIN)/python -m pytest

# Every bench/bench_*.py, each printing its figures as ratios against a baseline of the same run.
bench: install
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lint: install
	@$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	@$(BIN)/ruff check --fix . && $(BIN)/ruff format .

# Stops nothing: run it only when Chatter is not running. Deletes the embedded database.
clean-data:
	rm -rf .chatter
