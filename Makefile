# The README's commands. `make run` and `make test` create .venv when missing (idempotent:
# a stamp named after pyproject.toml's hash makes a second call a no-op).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tuneline-$(shell sha256sum pyproject.toml | cut -c1-12)
LOG    := $(VENV)/install.log
PIP    := $(BIN)/python -m pip
PIPOPT := -q --disable-pip-version-check
# pip prints one warning per missing local index folder on this machine family: keep them out
# of the way, but show the real error when an install fails.
SHOWLOG = (grep -v '^WARNING: Location' $(LOG) | tail -40; exit 1)

# dvc runs each stage's `python -m stages.<name>` through the shell: the venv's python must come first.
export PATH := $(abspath $(BIN)):$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED = false
export DO_NOT_TRACK = 1
export HF_HUB_DISABLE_TELEMETRY = 1

.PHONY: setup run test test-all bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and alone: the exact pin takes the local CPU wheel, never a CUDA build
	$(PIP) install $(PIPOPT) "torch==2.13.0" > $(LOG) 2>&1 || $(SHOWLOG)
	$(PIP) install $(PIPOPT) -e ".[test]" >> $(LOG) 2>&1 || $(SHOWLOG)
	$(BIN)/python -c "import tuneline, torch, presidio_analyzer, great_expectations, dvc, prefect, pytest"
	rm -f $(VENV)/.tuneline-* && touch $@

setup: $(STAMP)

run: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

test-all: setup
	$(BIN)/python -m pytest -m "slow or not slow"

clean-venv:
	rm -rf $(VENV)
