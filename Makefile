# `make demo` and `make test` each create or refresh .venv, install, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Pinned on purpose: an open range pulls a multi-GB CUDA build instead of the CPU wheel.
TORCH  := torch==2.13.0
RUN_DIR ?= runs/demo

# The candidate sandbox needs bubblewrap (Debian: bubblewrap); the default policy refuses to run without it.
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system demo test clean

system:
	@command -v bwrap >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q bubblewrap; }
	@command -v ip >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q iproute2; }  # the Ray tests' loopback-only namespace
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; }  # the browser tests (Playwright drives it; never `playwright install`)

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,ray]'
	touch $@

setup: system $(VENV)/.installed

demo: setup
	$(PY) -m successor run --preset default --run-dir $(RUN_DIR)
	$(PY) -m successor report $(RUN_DIR)
	$(PY) -m successor status $(RUN_DIR)

# Five workers, a test module each at a time (--dist loadfile keeps a module's fixtures on one worker): most of
# the suite waits on subprocesses, sandboxes and polls (user CPU was 10.5 min of a 17.4 min run on three workers).
# Measured on 2 cores from a clean clone: pytest 15 min 14 s with -n 3, 11 min 20 s with -n 5 (fewer tests then).
# The slow modules go first (--no-loadscope-reorder keeps tests/conftest.py's SLOW_FIRST order; by default xdist
# orders modules by their count of tests, which left the one-test loop modules to the end): 2026-12-07, a clean
# clone, alone: `time make test` 15 min 29 s, pytest 14 min 10 s (797 tests; 16 min 46 s for 767 before).
test: setup
	$(PY) -m pytest -q -n 5 --dist loadfile --no-loadscope-reorder --durations=25

clean:
	rm -rf $(VENV) runs
