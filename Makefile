# Two commands do all the setup on a fresh machine:
#   make run    -> installs into .venv, then `attnsim run` on the embedded defaults
#   make test   -> installs with the test extras, then the whole test suite
# A GPU user who already has a CUDA torch can point VENV at that environment: torch is only
# installed (as the CPU build 2.13.0) where none is importable.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

# Every other package at the version in constraints.txt (the versions the suite passed with).
CONSTRAINTS := constraints.txt
# What `make lock` leaves out of the constraints: torch comes from the line above or the user's own build.
UNLOCKED := ^(torch|triton|nvidia-|attnsim)

.PHONY: setup run test bench clean lock

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[test]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/attnsim run

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

bench: setup
	$(VENV)/bin/python -m benchmarks.harness

# Refresh constraints.txt with the newest versions pyproject.toml allows; then `make test` and commit.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q torch==2.13.0
	.lock-venv/bin/python -m pip install -q -e ".[test]"
	{ sed -n '/^#/p' $(CONSTRAINTS); .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v -i -E '$(UNLOCKED)'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS) && rm -rf .lock-venv

clean:
	rm -rf runs .pytest_cache
