# Two entry points for a fresh machine: `make lab` and `make test`.
# Both create the project-local virtual environment (.venv) when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: lab test lint student badges clean-venv

$(STAMP): pyproject.toml requirements-referees.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-referees.txt
	touch $(STAMP)

# Jupyter refuses to run as root (containers, Binder-like hosts) unless told to.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(ROOT_FLAG)

# `make present NB=00`: a notebook's demos as an app for the classroom. Voilà runs the notebook
# and shows its text, figures and live widgets without the code; VOILA_FLAGS adds options
# (e.g. VOILA_FLAGS=--port=8867). Voilà runs as root without being told (it has no
# --allow-root), so ROOT_FLAG is not passed.
PRESENT_NOTEBOOK = $(firstword $(wildcard notebooks/$(NB)_*.ipynb))
ifneq ($(filter present,$(MAKECMDGOALS)),)
ifeq ($(PRESENT_NOTEBOOK),)
$(error NB=$(NB) names no notebook: give a notebook's number, e.g. make present NB=00 \
  (notebooks: $(notdir $(wildcard notebooks/[0-9][0-9]_*.ipynb))))
endif
endif

.PHONY: present
present: $(STAMP)
	$(BIN)/voila $(PRESENT_NOTEBOOK) $(VOILA_FLAGS)

# Notebooks run in fast mode unless COURSE_FAST=0 is given (the full run takes much longer).
# Strict checks: a failed exercise check (a wrong solution or checker) fails the run.
test: export COURSE_FAST ?= 1
test: export MPLBACKEND ?= Agg
test: export COURSE_CHECK_STRICT ?= 1
test: $(STAMP)
	$(BIN)/ruff check course_lib tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check course_lib tests benchmarks

# Student copies: the notebooks without their solution cells and with the exercise cells'
# outputs cleared (nbconvert's TagRemovePreprocessor, configured in tools/student_copies.py).
STUDENT_DIR ?= student
student: $(STAMP)
	rm -rf $(STUDENT_DIR)
	$(BIN)/jupyter nbconvert --log-level=WARN --config tools/student_copies.py \
		--output-dir $(STUDENT_DIR) notebooks/[0-9][0-9]_*.ipynb
	@echo "student copies written to $(STUDENT_DIR)/"

# In a fork of the course: `make badges REPO=owner/name` (REF=branch if not main) records the
# public repository (course_lib/repository.py explains) and writes the Colab and Binder badges
# and the Colab setup cells that name it. Without REPO, rewrites them from the recorded one.
badges: $(STAMP)
	$(BIN)/python -m course_lib.repository $(REPO) $(if $(REF),--ref $(REF))

clean-venv:
	rm -rf $(VENV)
