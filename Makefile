SHELL := /bin/bash
# Two commands do everything on a fresh machine:
#   make demo   create .venv, install dagvisor, run the quick-start example
#   make test   create .venv, install dagvisor[dev], run ruff, mypy and the tests
#               (and install Debian's chromium for the report's browser test,
#               when apt-get runs as root; the test is skipped otherwise)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck pytest browser bench-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,process,dask,cli]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/python -m dagvisor demo

test: $(VENV)/.installed-dev browser
	$(MAKE) lint typecheck pytest

# The HTML report is tested in a real headless browser: Debian's chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the report's browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1 \
	    || echo "chromium could not be installed: the browser test will be skipped"; \
	  else \
	    echo "chromium is missing and apt-get cannot run as root: the browser test will be skipped"; \
	  fi; }

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# `actors/` and `supervisor/` install as dagvisor.actors and dagvisor.supervisor
# (setuptools package-dir). mypy does not run import hooks, so it is shown the
# installed layout as a tree of symbolic links, and its report is mapped back
# to the repository's paths.
typecheck: $(VENV)/.installed-dev
	rm -rf .typecheck && mkdir -p .typecheck/dagvisor
	for f in dagvisor/*; do ln -s ../../$$f .typecheck/dagvisor/; done
	ln -s ../../actors .typecheck/dagvisor/actors
	ln -s ../../supervisor .typecheck/dagvisor/supervisor
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml -p dagvisor \
		| sed -e 's#^dagvisor/actors/#actors/#' -e 's#^dagvisor/supervisor/#supervisor/#'; \
		exit $${PIPESTATUS[0]}

pytest: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

# A regression guard, not a timed test: per-stage cost may not grow more than
# 2x from 1,000 to 100,000 stages (a ratio within one run: noise cancels).
bench-smoke: $(VENV)/.installed
	$(BIN)/python bench/depth.py --sizes 1000,100000 --repeat 3 --max-growth 2.0 > /dev/null

clean:
	rm -rf $(VENV) .typecheck .pytest_cache .hypothesis *.egg-info build
