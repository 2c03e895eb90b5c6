# The README's two commands: `make demo` (the main job) and `make test` (the test suite).
# Both set everything up on first use: .venv, nndl and its Python packages, and the Debian packages.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.nndl-installed
# The CPU wheel of torch: installed only when the venv has no torch yet, so a GPU build
# that a user put in .venv first is left alone.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test bench gpu-data clean-runs

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[dev]"
	bash scripts/setup-system.sh
	touch $(STAMP)

demo: setup
	$(BIN)/python scripts/demo.py

test: setup
	$(BIN)/python -m pytest -q -ra

bench: setup
	$(BIN)/nndl bench

# The Fashion-MNIST files for bench/gpu_check.sh, which runs on a machine without the Debian package.
gpu-data: setup
	mkdir -p .gpu-data && cp /usr/share/datasets/fashion-mnist/*.gz .gpu-data/

clean-runs:
	rm -rf runs/demo-*
