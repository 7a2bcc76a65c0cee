# Attune: one entry point. `make demo` and `make test` each run `make setup` first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
ORT_DIR := .ort
REAL_MODEL := models/smollm2-135m-instruct
TINY_MODEL := models/tiny
CARGO ?= cargo
export ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER ?= 1
export XDG_RUNTIME_DIR ?= /tmp/attune-xdg


.PHONY: check-features setup check-system venv ort models build demo test test-fast test-python bench bench-peers clean

setup: check-system venv ort models build

check-system:
	@bash scripts/check-system.sh

$(VENV)/.stamp: models/requirements.txt
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r models/requirements.txt
	touch $@

venv: $(VENV)/.stamp

ort: venv
	@bash scripts/install-ort.sh $(VPY) $(ORT_DIR)

models: venv
	@bash models/prepare.sh $(VPY)

build:
	$(CARGO) build --release --workspace

demo: setup
	mkdir -p $$XDG_RUNTIME_DIR
	$(CARGO) run --release --bin attune -- demo --model $(REAL_MODEL) --out target/demo

# Fast tier (tiny model) and slow tier (real model) together; CI runs this.
test: setup check-features
	mkdir -p $$XDG_RUNTIME_DIR
	$(CARGO) test --release --workspace
	$(VPY) -m pytest -q models/test_model.py

# The execution providers behind cargo features compile (they are used only where the loaded ONNX
# Runtime library carries them).
check-features:
	$(CARGO) check --features cuda,tensorrt,coreml,nnapi,qnn,directml,xnnpack

test-fast: setup
	mkdir -p $$XDG_RUNTIME_DIR
	ATTUNE_FAST_ONLY=1 $(CARGO) test --release --workspace

bench: setup
	$(CARGO) run --release --bin attune -- bench --model $(REAL_MODEL) --threads 2

# Peers (llama.cpp via llama-cpp-python, onnxruntime-genai) on the same weights; not part of CI.
bench-peers: setup
	bash benches/peers.sh

clean:
	rm -rf target $(ORT_DIR)
