# Set-up and tests. (The ReST loop itself arrives in rest.mk with the loop issue.)
#   make test      create .venv, install rest with its test extras, run the test suite
#   make install   only the set-up

PYTHON ?= python3
VENV ?= .venv
# Pins torch to the small CPU wheel. Users with a CUDA build: TORCH_CONSTRAINTS=/dev/null.
TORCH_CONSTRAINTS ?= constraints-cpu.txt
BIN := $(VENV)/bin

.PHONY: install test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(TORCH_CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(TORCH_CONSTRAINTS) -e '.[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
