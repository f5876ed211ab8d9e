# facepipe: one target per thing a person does. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# checkov pins boto3 to a version aws-sam-cli cannot use, so it gets a virtual environment of its own.
CHECKOV_VENV ?= .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
# torch/torchvision pinned together; facenet-pytorch 2.6 pins an older torch, so it goes in --no-deps.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# auto: PyPI's CUDA build where nvidia-smi lists a GPU, else the CPU build from TORCH_CPU_INDEX
# (PyPI's where that cannot be reached); cpu or cuda force it (scripts/install.sh).
TORCH_BUILD ?= auto
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=
EVAL_ARGS ?= --embedder dlib
export SAM_CLI_TELEMETRY=0
# checkov offline: no update check on PyPI, no guideline download (see .checkov.yaml)
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE

.PHONY: help install demo eval test lint format typecheck events invoke-detection \
        invoke-recognition invoke-ingest local bench gpu-wheels gpu-check bench-e2e bench-burst bench-memory bench-match bench-scale bench-vectors build deploy validate clean \
        images image-check docs format

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(CHECKOV): requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	@touch $@

install: $(PY) $(CHECKOV) ## create .venv with torch (CPU build without a GPU; TORCH_BUILD=cpu|cuda), facenet-pytorch, facepipe, dev tools (+ .venv-checkov)
	PY=$(PY) TORCH_PINS="$(TORCH_PINS)" TORCH_BUILD="$(TORCH_BUILD)" TORCH_CPU_INDEX="$(TORCH_CPU_INDEX)" scripts/install.sh
	@$(BIN)/facepipe --help >/dev/null && echo "installed: $(BIN)/facepipe"

demo: ## the full pipeline on the local stack with the shipped samples (offline dlib recognition without VGGFace2)
	$(BIN)/facepipe demo $(DEMO_ARGS)

eval: ## calibrate: ROC AUC, best threshold and accuracy on ../shared/faces/master.csv (EVAL_ARGS=--embedder dlib)
	$(BIN)/facepipe eval $(EVAL_ARGS)

bench: ## pipeline vs plain facenet-pytorch: speed per resolution, parity, GFLOP/s, cold start, e2e, cost (BENCH_ARGS=--random-weights, --quick)
	$(BIN)/facepipe bench perf $(BENCH_ARGS)

gpu-wheels: ## download the wheels gpu-check installs on a GPU machine without PyPI into .whl/ (bench/gpu-wheels.sh)
	bench/gpu-wheels.sh

gpu-check: ## on a machine with an NVIDIA GPU: the GPU tests and the bench on CUDA, into bench/results/gpu/ (bench/gpu-check.sh)
	bench/gpu-check.sh

bench-e2e: ## 100 requests through the local stack: latency p50/p95/p99, throughput, stages, lost (BENCH_ARGS=--random-weights without VGGFace2)
	$(BIN)/facepipe bench e2e -n 100 --json-out bench/results/e2e.json $(BENCH_ARGS)

bench-burst: ## 1,000 requests through the local stack, each function in its own RIE process: lost (must be 0), latency, peak memory per stage
	$(BIN)/facepipe bench e2e -n 1000 --runtime rie --concurrency 8 --poll-timeout 1800 --json-out bench/results/burst.json $(BENCH_ARGS)

bench-memory: ## detection's peak memory per frame size and per request, and the checks of the limits it derives (bench/results/memory.json)
	$(PY) -m facepipe.bench.memory --json-out bench/results/memory.json

bench-scale: ## the data plane at scale: albums of 10k-1M faces written as the stack writes them, a 1M-row LanceDB gallery, 8 clients x 100 frames (bench/results/scale.json, docs/scale.png; SCALE_ARGS=...)
	$(BIN)/facepipe bench scale --json-out bench/results/scale.json --chart docs/scale.png $(SCALE_ARGS)

bench-match: ## top-5 matching over a 1,000,000-row synthetic gallery: latency p50/p95, recall, memory, build (MATCH_ARGS=...)
	$(BIN)/facepipe bench match -n 1000000 --json-out bench/results/match.json $(MATCH_ARGS)

bench-vectors: ## vector stores for large galleries: faiss, LanceDB (folder, moto S3), pgvector at 100k and 1M rows (VECTORS_ARGS=...)
	$(BIN)/facepipe bench vectors -n 100000 -n 1000000 --json-out bench/results/vectors.json $(VECTORS_ARGS)

local: ## start the local stack (Ctrl-C stops it); LOCAL_ARGS=... for flags
	$(BIN)/facepipe local up $(LOCAL_ARGS)

test: ## lint, type-check and run every test (what CI runs)
	$(MAKE) lint
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(CHECKOV) ## ruff (lint + format check), mypy, import contracts, doc links and site build, sam validate --lint, cfn-lint + serverless rules, checkov
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(PY) docs/check_links.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/sam validate --lint -t template.yaml
	$(BIN)/cfn-lint template.yaml -a cfn_lint_serverless.rules
	$(CHECKOV) -f template.yaml

docs: ## the documentation site from docs/ into build/site (MkDocs Material; fails on a broken link)
	$(BIN)/mkdocs build --strict

format: ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

events: ## regenerate events/ from the sample images (real detection output)
	$(BIN)/facepipe events --out events

# sam local invoke needs Docker's bridge network (it maps the RIE's port 8080 through it); where
# there is none (a private dockerd here), facepipe invoke runs the built image (or, without one,
# the function's code) under the RIE on 127.0.0.1 instead.
SAM_INVOKE := docker network inspect bridge >/dev/null 2>&1 && test -d .aws-sam/build

invoke-detection: ## invoke the detection function with events/ (sam local invoke; else its image or code under the RIE)
	@if $(SAM_INVOKE); then \
	  $(BIN)/sam local invoke DetectionFunction -e events/detection-single.json; \
	else \
	  $(BIN)/facepipe invoke detection events/detection-single.json; \
	fi

invoke-recognition: ## invoke the recognition function with events/ (sam local invoke; else its image or code under the RIE)
	@if $(SAM_INVOKE); then \
	  $(BIN)/sam local invoke RecognitionFunction -e events/recognition-sqs.json; \
	else \
	  $(BIN)/facepipe invoke recognition events/recognition-sqs.json; \
	fi

invoke-ingest: ## invoke the S3 ingest function with events/ingest-sqs.json, samples/astronaut.jpg uploaded first (its image or code under the RIE)
	$(BIN)/facepipe invoke ingest events/ingest-sqs.json --object samples/astronaut.jpg

images: ## build both container images as sam build does: facepipe-detection:local, facepipe-recognition:local (IMAGES_ARGS=--offline here)
	$(BIN)/facepipe images build $(IMAGES_ARGS)

image-check: ## build both images offline (private dockerd, stand-in base, local torch) and run every event of events/ through them (bench/image-check.sh)
	bench/image-check.sh $(IMAGE_CHECK_ARGS)

validate: ## sam validate --lint
	$(BIN)/sam validate --lint -t template.yaml

build: ## sam build (needs Docker): both container images, weights baked in
	$(BIN)/sam build

deploy: ## sam deploy --guided (first time) using samconfig.toml
	$(BIN)/sam deploy --guided

clean: ## remove build outputs
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache out
