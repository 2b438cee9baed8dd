# The two commands of the README: `make demo` (the main job) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-ui test lint bench clean

$(STAMP): pyproject.toml hatch_build.py src/rowcast/_cspeedups.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rowcast demo

demo-ui: $(STAMP)
	$(BIN)/rowcast demo --ui

test: $(STAMP)
	bash scripts/services.sh
	$(BIN)/ruff check src tests bench hatch_build.py
	$(BIN)/ruff format --check src tests bench hatch_build.py
	$(BIN)/mypy
	$(BIN)/pytest
	ROWCAST_PURE=1 $(BIN)/pytest -q tests/store tests/test_change.py tests/test_codec.py tests/test_speedups.py tests/sources/test_rows.py tests/sinks

bench: $(STAMP)
	$(BIN)/python bench/capture.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/rowcast/*.so
