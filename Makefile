# comments-api: every routine task starts here. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum requirements-dev.lock pyproject.toml | sha256sum | cut -c1-12)
IMAGE ?= comments-api:dev

.DEFAULT_GOAL := help
.PHONY: help venv run migrate test test-fast lint fmt system-deps bench image image-test lock clean dashboards \
  deploy-local pipeline-test

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP):
	rm -f $(VENV)/.installed-*
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP) ## create .venv from the hash-pinned lock

run: venv ## migrate and serve on :8000 with the embedded SQLite default (./data)
	$(BIN)/comments-api serve

migrate: venv ## upgrade the database in DATABASE_URL
	$(BIN)/comments-api migrate

system-deps: ## install PostgreSQL, Redis, Prometheus, wrk if missing (Debian, root)
	scripts/install-system-deps.sh

test: venv system-deps ## set up everything and run the whole test suite (container tests: image-test)
	$(BIN)/pytest -m "not docker and not pipeline"

test-fast: venv ## tests without the system services (skips what is missing)
	$(BIN)/pytest -m "not docker and not pipeline"

lint: venv ## ruff lint + format check, mypy, shellcheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/shellcheck scripts/*.sh .ci/run

fmt: venv ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv system-deps ## side-by-side benchmark against the original app (prints a table)
	$(BIN)/python bench/run.py

image: ## build $(IMAGE) from the public base images (needs registry access)
	scripts/image-build.sh

image-test: venv ## build the image on local stand-in bases and run the hardened checks
	scripts/image-test.sh

deploy-local: venv ## the whole delivery pipeline on this Docker host (scripts/deploy.sh --target local)
	scripts/deploy.sh --target local

pipeline-test: venv ## run deploy.sh --target local for real: promotion, zero-failure rollouts, rollbacks
	scripts/pipeline-test.sh

dashboards: venv ## regenerate the Grafana dashboard JSON from deploy/monitoring/grafana/generate.py
	$(BIN)/python deploy/monitoring/grafana/generate.py

lock: ## re-resolve both lock files (needs uv: pip install uv)
	uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -o requirements.lock -q
	uv pip compile pyproject.toml --extra dev -c requirements.lock --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -o requirements-dev.lock -q

clean: ## remove the venv, caches and the local SQLite data
	rm -rf $(VENV) data .pytest_cache .ruff_cache .mypy_cache artifacts
