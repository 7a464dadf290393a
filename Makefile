# Two entry points for a fresh machine: `make lab` and `make test`.
# Both create the project-local virtual environment (.venv) when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: lab test lint clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Jupyter refuses to run as root (containers, Binder-like hosts) unless told to.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(ROOT_FLAG)

# Notebooks run in fast mode unless COURSE_FAST=0 is given (the full run takes much longer).
test: export COURSE_FAST ?= 1
test: export MPLBACKEND ?= Agg
test: $(STAMP)
	$(BIN)/ruff check course_lib tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check course_lib tests benchmarks

clean-venv:
	rm -rf $(VENV)
