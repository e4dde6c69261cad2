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
# the suite waits on subprocesses, sandboxes and polls. The slow modules go first (--no-loadscope-reorder keeps
# tests/conftest.py's SLOW_FIRST order; by default xdist orders modules by their count of tests, which left the
# one-test loop modules to the end). tests/conftest.py gives every test process one torch thread: five workers
# evaluating at two OpenMP threads each oversubscribed the cores (10 more CPU-minutes). Measured on 2 cores, alone,
# 2026-12-07 (816 tests): a clean clone's `time make test` 10 min 58 s, pytest 9 min 34 s (user CPU 7 min 15 s);
# pytest 14 min 34 s before the one thread, 17 min 26 s before the trainer stopped importing torch._dynamo.
test: setup
	$(PY) -m pytest -q -n 5 --dist loadfile --no-loadscope-reorder --durations=25

clean:
	rm -rf $(VENV) runs
