# Developer entry points. `make setup` is idempotent and cheap when nothing changed: each
# expensive step (virtualenv, pip install, Kafka jars) is guarded by a stamp holding the hash
# of its input, so it reruns only when pyproject.toml / local/pom.xml change.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
JARS := .cache/kafka-jars
PIP_STAMP := $(VENV)/.installed-pyproject.sha256
JARS_STAMP := $(JARS)/.resolved-pom.sha256
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
TYPED := models producers stream batch dashboards local

.PHONY: help setup setup-python setup-kafka setup-redis setup-chromium setup-grafana-schema check-java test lint up down bench clean

help:
	@echo "make setup   virtualenv + deps, Kafka jars, redis-server (idempotent)"
	@echo "make test    unit + integration tests (starts its own Kafka and Redis)"
	@echo "make lint    ruff check, ruff format --check, mypy"
	@echo "make up      local stack: Kafka, Redis, stream worker, producers (logs in .run/)"
	@echo "make down    stop what make up started"
	@echo "make bench   benchmarks"
	@echo "make clean   stop the stack, remove .run/ and tool caches"

setup: setup-python setup-kafka setup-redis setup-chromium setup-grafana-schema check-java

setup-python:
	@if [ ! -x $(PY) ]; then \
	    command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (set PYTHON=...)" >&2; exit 1; }; \
	    echo "creating $(VENV) with $(PYTHON)"; \
	    $(PYTHON) -m venv $(VENV); \
	fi
	@want=$$(sha256sum pyproject.toml | cut -d' ' -f1); \
	if [ "$$(cat $(PIP_STAMP) 2>/dev/null)" != "$$want" ]; then \
	    echo "installing the project and dev dependencies into $(VENV)"; \
	    $(PY) -m pip install -q -e '.[dev]'; \
	    echo "$$want" > $(PIP_STAMP); \
	fi

# Resolved into a temporary directory first, so a failed download never leaves a half-filled
# jar directory. Then jars the pom no longer names are removed (no old Kafka next to a new
# one) and new ones moved in; jars already there stay untouched (their names carry their
# versions), so a broker running from them is not disturbed.
setup-kafka:
	@want=$$(sha256sum local/pom.xml | cut -d' ' -f1); \
	if [ "$$(cat $(JARS_STAMP) 2>/dev/null)" != "$$want" ]; then \
	    command -v mvn >/dev/null || { echo "Maven is required to fetch Kafka: apt-get install -y maven" >&2; exit 1; }; \
	    echo "resolving Kafka jars with Maven into $(JARS)"; \
	    rm -rf $(JARS).tmp; \
	    mvn -q -B -Dstyle.color=never -f local/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/$(JARS).tmp; \
	    mkdir -p $(JARS); \
	    for jar in $(JARS)/*.jar; do [ -e "$(JARS).tmp/$${jar##*/}" ] || rm -f "$$jar"; done; \
	    mv -n $(JARS).tmp/*.jar $(JARS)/; rm -rf $(JARS).tmp; \
	    echo "$$want" > $(JARS_STAMP); \
	fi

setup-redis:
	@if ! command -v redis-server >/dev/null; then \
	    echo "installing redis-server with apt-get"; \
	    $(SUDO) apt-get update -q; \
	    $(SUDO) apt-get install -y -q redis-server; \
	fi

# Debian's headless browser and its driver, for the alerts-page browser test and screenshots.
setup-chromium:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	    echo "installing chromium and chromium-driver with apt-get"; \
	    $(SUDO) apt-get update -q; \
	    $(SUDO) apt-get install -y -q chromium chromium-driver; \
	fi

GRAFANA_SCHEMA := local/grafana-schema
SCHEMA_STAMP := $(GRAFANA_SCHEMA)/node_modules/.installed-lock.sha256

# Offline validators for tests/unit/dashboards: @grafana/schema types (checked with tsc) and
# Prometheus's PromQL grammar, pinned by package-lock.json.
setup-grafana-schema:
	@want=$$(sha256sum $(GRAFANA_SCHEMA)/package-lock.json | cut -d' ' -f1); \
	if [ "$$(cat $(SCHEMA_STAMP) 2>/dev/null)" != "$$want" ]; then \
	    command -v npm >/dev/null || { echo "Node.js and npm are required: apt-get install -y nodejs npm" >&2; exit 1; }; \
	    echo "installing the dashboard schema tools into $(GRAFANA_SCHEMA)/node_modules"; \
	    npm ci --prefix $(GRAFANA_SCHEMA) --no-audit --no-fund --loglevel=error; \
	    echo "$$want" > $(SCHEMA_STAMP); \
	fi

check-java:
	@command -v java >/dev/null || { echo "Java 17+ is required: apt-get install -y openjdk-17-jre-headless" >&2; exit 1; }

test: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/

# All three run even if one fails, so one pass shows every problem.
lint: setup-python
	@status=0; \
	echo "ruff check ."; $(VENV)/bin/ruff check . || status=1; \
	echo "ruff format --check ."; $(VENV)/bin/ruff format --check . || status=1; \
	echo "mypy $(TYPED)"; $(VENV)/bin/mypy $(TYPED) || status=1; \
	exit $$status

up: setup
	@local/stack.sh up

down:
	@local/stack.sh down

bench: setup
	$(PY) -m benchmarks

clean: down
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
