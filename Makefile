SHELL := /bin/bash
# Two commands do everything on a fresh machine:
#   make demo   create .venv, install dagvisor, run the quick-start example
#   make test   create .venv, install dagvisor[dev] and every extra, run ruff, mypy
#               and the tests
#               (and install Debian's chromium and graphviz for the browser and
#               DOT tests, when apt-get runs as root, and Mermaid 11 from npm
#               into .cache/; the tests that need them are skipped otherwise)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck pytest browser mermaid vendor-dagre bench-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,process,dask,cli,data,serve]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/python -m dagvisor demo

test: $(VENV)/.installed-dev browser mermaid
	$(MAKE) lint typecheck pytest

# The HTML report and the Mermaid export are tested in a real headless
# browser (Debian's chromium); the DOT export with Graphviz's `dot`.
browser:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v dot >/dev/null 2>&1 || missing="$$missing graphviz"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's$$missing for the browser and DOT tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends $$missing) >/dev/null 2>&1 \
	    || echo "$$missing could not be installed: the tests that need it will be skipped"; \
	  else \
	    echo "$$missing missing and apt-get cannot run as root: the tests that need it will be skipped"; \
	  fi; \
	fi

# Mermaid 11's own parser checks the Mermaid export (in the browser above).
# It comes from the npm registry into a git-ignored cache, once; the tests
# load it from there and never touch the network.
MERMAID := .cache/mermaid/node_modules/mermaid/dist/mermaid.min.js

mermaid: $(MERMAID)

$(MERMAID):
	@if command -v npm >/dev/null 2>&1; then \
	  mkdir -p .cache/mermaid && \
	  npm install --prefix .cache/mermaid --no-save --no-audit --no-fund \
	    --loglevel=error mermaid@11 >/dev/null \
	  || echo "mermaid@11 could not be installed: the Mermaid parser test will be skipped"; \
	else \
	  echo "npm is missing: the Mermaid parser test will be skipped"; \
	fi

# The HTML report lays its graph out with dagre (MIT, with its graphlib),
# shipped inside the package so that reports, the live view and the tests
# need neither the network nor npm: the files in supervisor/_static/dagre are
# committed. This development step refreshes them from the npm registry;
# change DAGRE_VERSION here and in supervisor/_assets.py together.
DAGRE_VERSION := 3.1.3
DAGRE_DIR     := supervisor/_static/dagre

vendor-dagre:
	rm -rf .cache/dagre && mkdir -p .cache/dagre
	npm install --prefix .cache/dagre --no-save --no-audit --no-fund \
	  --loglevel=error @dagrejs/dagre@$(DAGRE_VERSION) >/dev/null
	mkdir -p $(DAGRE_DIR)
	cp .cache/dagre/node_modules/@dagrejs/dagre/dist/dagre.min.js $(DAGRE_DIR)/
	cp .cache/dagre/node_modules/@dagrejs/dagre/LICENSE $(DAGRE_DIR)/LICENSE
	cp .cache/dagre/node_modules/@dagrejs/graphlib/LICENSE $(DAGRE_DIR)/LICENSE.graphlib
	for p in dagre graphlib; do \
	  node -p 'const j = require("./" + process.argv[1]); j.name + " " + j.version + " " + j.license' \
	    .cache/dagre/node_modules/@dagrejs/$$p/package.json; \
	done > $(DAGRE_DIR)/VERSIONS
	cat $(DAGRE_DIR)/VERSIONS

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
	rm -rf $(VENV) .typecheck .pytest_cache .hypothesis *.egg-info build .cache
