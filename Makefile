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

.PHONY: demo test test-fast lint typecheck pytest test-nerfstudio test-lts addon addon-wheels bench clean

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

# One self-contained zip per platform: torch, pillow and OpenEXR inside as wheels (downloads).
addon-wheels: $(STAMP)
	$(PY) build_addon.py --out dist --self-contained

# The LTS Blenders the manifest admits, each tested with its own bpy wheel in its own venv
# (about 370 MB each); training runs in .venv's Python, as for a Blender without torch.
BPY_42 := 4.2.23
BPY_45 := 4.5.15
LTS_PACKAGES := numpy==1.26.4 OpenEXR==3.5.3 pillow==13.0.0 zstandard==0.25.0 pytest==9.2.0
# The test files marked lts (the others import torch, which these venvs lack).
LTS_TESTS = $(shell grep -l "pytest.mark.lts" tests/test_*.py)

.venv-bpy%/.installed:
	$(PYTHON) -m venv .venv-bpy$*
	.venv-bpy$*/bin/pip install --quiet bpy==$(BPY_$*) $(LTS_PACKAGES)
	touch $@

# pytest's own exit code, then os._exit: the bpy 4.2 wheel crashes when the interpreter shuts
# down after any operator was registered (a six-line script with one operator does it), once
# every result is in.
LTS_PYTEST = import os, sys, pytest; code = pytest.main(sys.argv[1:]); sys.stdout.flush(); os._exit(code)

test-lts: $(STAMP) .venv-bpy42/.installed .venv-bpy45/.installed
	for version in 42 45; do \
		VBNF_TRAINING_PYTHON=$(abspath $(PY)) OMP_NUM_THREADS=1 .venv-bpy$$version/bin/python \
			-c "$(LTS_PYTEST)" -q -p no:xdist -m lts $(LTS_TESTS) || exit 1; \
	done

clean:
	rm -rf $(VENV) $(NERFSTUDIO_VENV) build dist out
