# Two commands do all the setup on a fresh machine:
#   make run    -> installs into .venv, then `attnsim run` on the embedded defaults
#   make test   -> installs with the test extras, then the whole test suite
# A GPU user who already has a CUDA torch can point VENV at that environment: torch is only
# installed (as the CPU build 2.13.0) where none is importable.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup run test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/attnsim run

test: setup
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

bench: setup
	$(VENV)/bin/python -m benchmarks.harness

clean:
	rm -rf runs .pytest_cache
