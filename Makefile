# labrun: `make train` runs the default experiment, `make test` the test suite.
# Both build .venv from scratch when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned to the builds this project is tested with.
TORCH := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: install train test lint format ui dashboard server server-stop slurm slurm-stop slurm-packages browser-packages bench clean
PG_PORT ?= 5433

install: $(STAMP)

# uv installs the ~140 packages in parallel (about half pip's minutes); where it cannot (no
# index it can read with these options), pip does it as before. Bytecode is compiled at install:
# with PYTHONDONTWRITEBYTECODE set, every process would otherwise compile torch's and Lightning's
# modules again. The find-links/index/constraint options are pip's own config on this machine.
UV_ARGS := --quiet --native-tls --compile-bytecode --index-strategy unsafe-best-match \
	$(if $(wildcard /opt/wheels),--find-links /opt/wheels) \
	$(if $(wildcard /opt/pypi/simple),--extra-index-url file:///opt/pypi/simple) \
	$(if $(wildcard /opt/pypi-more/simple),--extra-index-url file:///opt/pypi-more/simple) \
	$(if $(wildcard /etc/xdg/pip/constraints.txt),--constraint /etc/xdg/pip/constraints.txt)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	{ $(BIN)/pip install --quiet uv && \
	  $(BIN)/uv pip install --python $(BIN)/python $(UV_ARGS) $(TORCH) -e '.[dev]'; } || \
	{ $(BIN)/pip install --quiet $(TORCH) && $(BIN)/pip install --quiet -e '.[dev]'; }
	touch $(STAMP)

train: install
	$(BIN)/labrun train $(ARGS)

# Two workers: a test trains on one thread (threads=1), so two share this machine's two cores;
# a file's tests stay on one worker, so its session fixtures (a trained feature net) are made once.
# --durations: the slowest tests in every CI log, to keep CI inside its 30 minutes.
# --no-loadscope-reorder: files are handed out in tests/conftest.py's order, longest first
# (xdist would order them by their number of tests, and the long SLURM file would run last).
# The SLURM tests start a one-node cluster (tests/sweep/test_slurm.py); its packages come first.
# compileall: labrun's own modules as bytecode too (site-packages' is compiled at install), so
# the ~300 processes the suite starts do not each compile them again (PYTHONDONTWRITEBYTECODE).
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder --durations=25
test: install slurm-packages browser-packages
	$(BIN)/python -m compileall -q src
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# labrun vs plain PyTorch, side by side: writes benchmarks/results.json and BENCHMARKS.md.
bench: install
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# The MLflow UI over the embedded store that `labrun train` writes. MLflow 3's UI starts in its
# GenAI mode, a per-browser switch that no store can set: one click on "Model training" keeps it.
ui: install
	@echo "MLflow UI on http://$(HOST):$(PORT): click 'Model training' (top left) once; this browser keeps it"
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/runs/mlflow.db}" \
		--host $(HOST) --port $(PORT)

# optuna-dashboard over the searches' study storage (labrun sweep's default: runs/optuna.db;
# OPTUNA_STORAGE=postgresql+psycopg2://... for a team's), on $(HOST):$(DASHBOARD_PORT).
DASHBOARD_PORT ?= 8080
dashboard: install
	$(BIN)/optuna-dashboard --host $(HOST) --port $(DASHBOARD_PORT) \
		"$${OPTUNA_STORAGE:-sqlite:///$(CURDIR)/runs/optuna.db}"

# A team tracking server: PostgreSQL (installed here if missing and apt-get can) and an MLflow
# server on it with proxied artifacts, both on $(HOST); data in runs/server/.
server: install
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		{ command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get install -y -q postgresql; } || \
		{ echo "make server: install PostgreSQL first (apt-get install postgresql, brew install postgresql@15)"; exit 2; }
	$(BIN)/labrun server start --dir runs/server --port $(PORT) --pg-port $(PG_PORT)

server-stop: install
	$(BIN)/labrun server stop --dir runs/server

# A one-node SLURM cluster on this machine (munge, slurmctld, slurmd; slurm.conf in runs/slurm/):
# `labrun train -m hydra/launcher=slurm ...` submits to it. Debian's packages, installed if missing.
slurm: install slurm-packages
	$(BIN)/labrun slurm start --dir runs/slurm

slurm-stop: install
	$(BIN)/labrun slurm stop --dir runs/slurm

# slurmdbd and MariaDB: accounting, so sacct answers and memory requests are enforced.
SLURM_PACKAGES := slurm-wlm munge slurmdbd mariadb-server
slurm-packages:
	@command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v slurmdbd >/dev/null || \
		{ command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		  { apt-get install -y -q $(SLURM_PACKAGES) >/dev/null 2>&1 || \
		    { apt-get update -q >/dev/null && apt-get install -y -q $(SLURM_PACKAGES) >/dev/null; }; }; } || \
		echo "SLURM is not installed and cannot be here (apt-get install $(SLURM_PACKAGES), as root): its tests will say so"

# Debian's headless Chromium and its driver: the HTML report is checked in a real browser
# (tests/compare/test_report_browser.py, through Selenium pointed at these two).
BROWSER_PACKAGES := chromium chromium-driver
browser-packages:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		  { apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null 2>&1 || \
		    { apt-get update -q >/dev/null && apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null; }; }; } || \
		echo "Chromium is not installed and cannot be here (apt-get install $(BROWSER_PACKAGES), as root): its test will say so"

clean:
	rm -rf runs .pytest_cache .ruff_cache dist build
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
