# One virtual environment for everything; the CPU build of torch is installed first so that pip does not
# resolve a multi-GB CUDA build. Override for a GPU machine: make install TORCH_SPEC="torch>=2.6"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install test test-fast demo lint bench

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[train,eval,dev]"
	touch $@

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

demo: install
	$(BIN)/pite demo --output-dir demo_output

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done
