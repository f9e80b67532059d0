# kpx developer loop. `make test` is what developers and CI run (CI: .ci/run).
#
#   make venv         .venv with kpx and its dev tools (re-installs only when pyproject.toml changes)
#   make services     start/check PostgreSQL, RabbitMQ (+ management, prometheus plugins), promtool
#   make test         schema compatibility check + every test except the fault suite
#   make test-faults  the fault suite (kills and restarts services)
#   make check        ruff (lint + format) and mypy --strict
#   make demo         the simulated region (`kpx demo`)
#   make bench        the benchmarks
#   make clean        caches and build leftovers (keeps .venv and var/); distclean also .venv

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest

.DEFAULT_GOAL := test
.PHONY: venv services test test-faults check demo bench clean distclean

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The stamp is newer than pyproject.toml once its dependencies are installed.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

services:
	scripts/ensure-services

test: venv services
	$(BIN)/kpx schemas check
	$(PYTEST) -q -m "not faults"

# Exit code 5 is "no tests collected": until the fault suite exists that is not a failure.
test-faults: venv services
	@echo '$(PYTEST) -q -m faults'
	@status=0; $(PYTEST) -q -m faults || status=$$?; \
	if [ $$status -eq 5 ]; then echo "test-faults: no fault tests collected yet"; status=0; fi; \
	exit $$status

check: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy exchange nodes

demo: venv services
	$(BIN)/kpx demo

bench: venv services
	$(BIN)/python -m benchmarks

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
