# Set-up and everyday commands. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch pinned by constraints.txt: without it pip would pull a multi-GB CUDA build here.
PIP_INSTALL := $(PY) -m pip install -c constraints.txt

.PHONY: help install test test-slow test-all lint bench bench-gpu run sweep report reproduce clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install:  ## create .venv and install the package with its dev, launcher (joblib, submitit, Ray) extras
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP_INSTALL) -e '.[dev,launchers,ray,mnist1d]'

# The tests run in $(WORKERS) pytest-xdist processes (auto: one per core), each with one torch
# thread: most tests are single-threaded imports and tiny fits, so this halves the time on 2
# cores, and one thread each keeps the workers from fighting over the cores.
WORKERS ?= auto
PYTEST  := WANDB_MODE=offline WANDB_SILENT=true OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	$(PY) -m pytest -q -n $(WORKERS)

test:  ## run the test suite but its slow end-to-end tests (W&B offline, CPU; 4-6 min on 2 cores)
	$(PYTEST) -m "not slow"

test-slow:  ## the slow end-to-end tests only (launchers, Ray, kill -9, sweeps, benchmarks, the wheel; 8-12 min)
	$(PYTEST) -m slow

test-all:  ## every test (what CI runs)
	$(PYTEST)

lint:  ## ruff
	$(PY) -m ruff check .

bench:  ## speed: training overhead, hardware use, metrics suite, stacked seeds, parallel jobs (docs/performance.md)
	$(PY) benchmarks/training.py
	$(PY) benchmarks/metrics.py
	$(PY) benchmarks/stacked.py
	$(PY) benchmarks/parallel.py
	$(PY) benchmarks/scores.py

bench-gpu:  ## the device check on a GPU, <= 8 min, resumable (benchmarks/gpu.sh; QUICK=1 tries it on a CPU)
	PY=$(PY) bash benchmarks/gpu.sh

run:  ## train the default job (MLP on the bundled digits, 20% label noise)
	$(PY) -m memorization.run

sweep:  ## the default job at three noise levels, one folder each under multirun/, then its report
	$(PY) -m memorization.run -m noise.p=0,0.2,0.4

# the newest sweep folder unless SWEEP=... is given
SWEEP ?= $(lastword $(sort $(wildcard multirun/*/*/)))

report:  ## tables and figures of a sweep: make report SWEEP=multirun/DATE/TIME (default: newest)
	@test -n "$(SWEEP)" || { echo "error: no sweep under multirun/; make report SWEEP=<folder>"; exit 2; }
	$(PY) -m memorization.report "$(SWEEP)"

clean:  ## remove outputs of local runs (not multirun/README.md)
	rm -rf outputs lightning_logs .pytest_cache
	find multirun -mindepth 1 ! -name README.md -exec rm -rf {} +

# a paper's reproduction: its sweeps (resumed on a rerun), verdicts and document
PAPER ?=
SCALE ?= cpu
RUNS  ?= reproductions

reproduce:  ## a paper's claims against its numbers: make reproduce PAPER=zhang|arpit|theunissen|masc|all SCALE=smoke|cpu|cpu10k|paper
	@test -n "$(PAPER)" || { echo "error: no paper; make reproduce PAPER=zhang|arpit|theunissen|masc|all [SCALE=cpu]"; exit 2; }
	$(PY) -m memorization.reproduce $(PAPER) --scale $(SCALE) --runs "$(RUNS)"
