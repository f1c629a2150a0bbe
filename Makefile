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

.PHONY: setup browser run test test-all bench clean-venv

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

# The report tests render HTML in a real headless browser: Debian's chromium. Installed here when
# missing (needs root and apt-get, ~1 min); otherwise say what to install instead of failing mid-run.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (Debian package) for the HTML report tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || { echo "error: could not install chromium with apt-get; install it and run make test again" >&2; exit 1; }; \
	  else \
	    echo "error: the tests need the chromium browser: run 'sudo apt-get install chromium' (Debian/Ubuntu), then make test" >&2; \
	    exit 1; \
	  fi; }

test: setup browser
	$(BIN)/python -m pytest

test-all: setup browser
	$(BIN)/python -m pytest -m "slow or not slow"

clean-venv:
	rm -rf $(VENV)
