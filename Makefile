# comments-api: every routine task starts here. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum requirements-dev.lock pyproject.toml | sha256sum | cut -c1-12)
IMAGE ?= comments-api:dev

.DEFAULT_GOAL := help
.PHONY: help venv run migrate test test-fast docs lint fmt system-deps bench bench-floor soak image image-test lock clean dashboards \
  security k8s-check k8s-generate terraform-check deploy-local pipeline-test

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

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

system-deps: ## install PostgreSQL, PgBouncer, Redis, Prometheus, wrk, curl, chromium, npm if missing (Debian, root)
	scripts/install-system-deps.sh

# pytest-xdist workers for make test: one per core (TEST_JOBS=0 runs in this process, serially).
TEST_JOBS ?= auto

test: venv system-deps ## set up everything and run the whole test suite (container tests: image-test)
	$(BIN)/pytest -n $(TEST_JOBS) -m "not docker and not k8s and not terraform and not pipeline and not bench"

test-fast: venv ## the unit tier: validators, services (fake clock), settings, docs, assets; no servers, seconds
	$(BIN)/pytest -m unit

.PHONY: test-browser
test-browser: venv system-deps ## the widget, badges and moderation console in Debian's chromium (tests/browser)
	$(BIN)/pytest tests/browser tests/test_widget_assets.py

.PHONY: input-checks
input-checks: venv system-deps ## client-input hardening: regressions, schema agreement, Hypothesis, Schemathesis (part of `make test`)
	$(BIN)/pytest tests/test_client_input.py tests/test_duplicate_keys.py tests/test_contract_agreement.py tests/test_properties.py tests/test_fuzz.py

docs: venv ## regenerate the configuration reference in docs/configuration.md from Settings
	$(BIN)/python -m comments_api.settings_reference docs/configuration.md

lint: venv ## ruff lint + format check, mypy, import layers (lint-imports), shellcheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/shellcheck scripts/*.sh scripts/lib/*.sh .ci/run

security: venv ## bandit + semgrep (local rules in .semgrep/, own venv under /opt)
	scripts/security-check.sh

fmt: venv ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv system-deps ## side-by-side benchmark against the original app (prints tables, ~6 min)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-floor: venv system-deps ## the floor under our create: Flask and one shared SQLite file beside the original and ours (~2 min)
	$(BIN)/python bench/floor.py $(FLOOR_ARGS)

.PHONY: bench-smoke
bench-smoke: venv system-deps ## a 1-round smoke run of bench/run.py and its checks (tests/test_bench_smoke.py)
	$(BIN)/pytest -m bench tests/test_bench_smoke.py

soak: venv ## soak run: fixed-rate read/write mix, p99 and RSS per worker over time (SOAK_ARGS="--duration 120 --rate 40")
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

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

k8s-check: venv ## offline checks of deploy/k8s, provision-k8s.sh and .github/workflows (installs kubectl/node/checkov if missing)
	scripts/check-k8s.sh

k8s-generate: venv ## regenerate deploy/k8s PrometheusRule and dashboard ConfigMaps from deploy/monitoring
	$(BIN)/python deploy/k8s/generate.py

terraform-check: venv ## Terraform offline: fmt, validate, terraform test, plans + plan tests, checkov
	scripts/terraform-check.sh

lock: ## re-resolve both lock files (needs uv: pip install uv)
	uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -o requirements.lock -q
	uv pip compile pyproject.toml --extra dev -c requirements.lock --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -o requirements-dev.lock -q

clean: ## remove the venv, caches and the local SQLite data
	rm -rf $(VENV) data .pytest_cache .ruff_cache .mypy_cache artifacts
