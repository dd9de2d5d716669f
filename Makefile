# Set-up, tests, and the main job.
#   make rest G=2 I=3   install if needed, then run the ReST loop (rest.mk) on the offline demo
#   make losses         the paper's Figure 5 on the demo (losses.mk): each Improve loss, 3 seeds
#   make test           create .venv, install rest with its test extras, run the linter and the whole test suite
#   make test-fast      the daily tier: lint, then the tests that start no process and train nothing long
#   make install        only the set-up
# Variables of the loop (G, I, N, REWARD, TRAIN, RUN, ...) are passed on to rest.mk (and losses.mk).

PYTHON ?= python3
VENV ?= .venv
# Pins torch to the small CPU wheel. Users with a CUDA build: TORCH_CONSTRAINTS=/dev/null.
TORCH_CONSTRAINTS ?= constraints-cpu.txt
BIN := $(VENV)/bin

.PHONY: install test test-fast lint rest losses clean
FAST := not subprocess and not make and not torchrun and not slow

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(TORCH_CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(TORCH_CONSTRAINTS) -e '.[dev,plot]'
	touch $@

test: lint
	$(BIN)/python -m pytest

test-fast: lint
	$(BIN)/python -m pytest -m "$(FAST)"

lint: install
	$(BIN)/ruff check rest_cli tests benchmarks

# Paths on the command line (TRAIN=..., RUN=...) are relative to where make was started, also with
# `make -C CHECKOUT`: the shell's PWD says where that is (make -C does not change it).
rest: install
	$(MAKE) -f rest.mk rest REST="$(abspath $(BIN))/rest" USER_DIR="$(or $(PWD),$(CURDIR))"

losses: install
	$(MAKE) -f losses.mk losses REST="$(abspath $(BIN))/rest" USER_DIR="$(or $(PWD),$(CURDIR))"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
