# Two entry points: `make demo` (bake the built-in demo scene) and `make test` (lint, types, tests).
# Both bootstrap .venv from requirements.txt on first use. `make test-nerfstudio` (optional) also
# builds .venv-nerfstudio and loads captured and synthetic datasets with nerfstudio's parsers.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NERFSTUDIO_VENV := .venv-nerfstudio
NERFSTUDIO_STAMP := $(NERFSTUDIO_VENV)/.installed
NERFSTUDIO_PIN := nerfstudio==1.1.5

.PHONY: demo test test-fast lint typecheck pytest test-nerfstudio addon bench clean

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

$(NERFSTUDIO_STAMP): requirements-nerfstudio.txt
	$(PYTHON) -m venv $(NERFSTUDIO_VENV)
	$(NERFSTUDIO_VENV)/bin/python -m pip install --quiet -r requirements-nerfstudio.txt
	$(NERFSTUDIO_VENV)/bin/python -m pip install --quiet --no-deps $(NERFSTUDIO_PIN)
	touch $(NERFSTUDIO_STAMP)

test-nerfstudio: $(STAMP) $(NERFSTUDIO_STAMP)
	$(PY) -m pytest -n 0 tests/test_nerfstudio.py

addon: $(STAMP)
	$(PY) build_addon.py --out dist

clean:
	rm -rf $(VENV) $(NERFSTUDIO_VENV) build dist out
