# Two entry points: `make demo` (bake the built-in demo scene) and `make test` (lint, types, tests).
# Both bootstrap .venv from requirements.txt on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck pytest addon bench clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m bench.demo --out out/demo

test: lint typecheck pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest -n 2 tests

# The edit-test loop: everything but the tests that train for long or drive Blender and Cycles.
test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow and not blender" tests

addon: $(STAMP)
	$(PY) build_addon.py --out dist

clean:
	rm -rf $(VENV) build dist out
