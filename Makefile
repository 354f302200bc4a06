# The commands people type. Each target creates the environment it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench soak docs clean cpython-suites

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,dask]'
	touch $(STAMP)

## make run: the main job, a side-by-side benchmark on this machine
run: $(STAMP)
	$(VENV)/bin/manycore bench $(RUN_ARGS)

## make test: lint, type checks and the test suite
test: lint typecheck pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples tools
	$(VENV)/bin/ruff format --check src tests benchmarks examples tools

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## make soak: the long chaos run: workers SIGKILLed at random while tasks retry (a few minutes)
soak: $(STAMP)
	$(PY) -m benchmarks.soak $(SOAK_ARGS)

DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[docs]'
	touch $(DOCS_STAMP)

## make docs: the guides and the API reference (from docstrings) as HTML; warnings are errors
docs: $(DOCS_STAMP)
	$(PY) -m sphinx -q -W --keep-going -b html docs build/docs

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,dask,bench]'
	touch $(BENCH_STAMP)

## make bench: the development benchmarks, beside the stdlib and the peers (installed here),
## written to bench-results/
bench: $(BENCH_STAMP)
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .mypy_cache .ruff_cache bench-results build

## make cpython-suites: CPython's own multiprocessing and concurrent.futures tests, run against
## manycore beside the stdlib (tools/cpython_suites.py; long: about an hour for every part)
cpython-suites: $(STAMP)
	$(PY) tools/cpython_suites.py $(SUITES_ARGS)
