# The README's commands. `make run` and `make test` create .venv when missing, from the
# hash-locked requirements.lock (idempotent: a stamp named after the hash of pyproject.toml and
# the lock makes a second call a no-op). `make lock` refreshes the lock after a dependency change.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock
STAMP  := $(VENV)/.tuneline-$(shell cat pyproject.toml $(LOCK) | sha256sum | cut -c1-12)
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

.PHONY: setup lock scan browser run test test-all bench clean-venv

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# exactly the lock: its versions and file sha256s (torch: the local CPU wheel, never a CUDA build);
	# --no-deps: the lock is already the full resolution, so pip adds nothing unhashed; pip check confirms it
	$(PIP) install $(PIPOPT) --require-hashes --no-deps -r $(LOCK) > $(LOG) 2>&1 || $(SHOWLOG)
	# the project itself: no dependency of its own (all in the lock), built with the lock's setuptools
	$(PIP) install $(PIPOPT) --no-deps --no-build-isolation -e . >> $(LOG) 2>&1 || $(SHOWLOG)
	$(PIP) check >> $(LOG) 2>&1 || $(SHOWLOG)
	$(BIN)/python -c "import tuneline, torch, presidio_analyzer, great_expectations, dvc, prefect, pytest"
	rm -f $(VENV)/.tuneline-* && touch $@

setup: $(STAMP)

# Re-resolve pyproject.toml (dependencies, the test extra, setuptools) into requirements.lock with
# each file's sha256 (tools/lock.py; ~40 s; needs only pip). Commit the lock with the pyproject change.
lock:
	$(PYTHON) tools/lock.py

# Static security scan (bandit, configured in pyproject.toml; ~2 s): fails on any finding that is
# not fixed or justified in place with `# nosec BXXX: reason`.
scan: setup
	$(BIN)/bandit -c pyproject.toml -q -r tuneline stages apps flows
	@echo "scan: bandit found no unjustified issue in tuneline stages apps flows"

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

test: setup scan browser
	$(BIN)/python -m pytest

test-all: setup scan browser
	$(BIN)/python -m pytest -m "slow or not slow"

clean-venv:
	rm -rf $(VENV)
