# Developer and CI entry points. Everything a fresh machine needs is installed from here:
# the venv and Python packages (pip), JDK/Maven/docker-compose (apt), Kafka (Maven Central).
#
#   make run [WORKERS=N] [SECURE=1]   the whole stack in the foreground (Ctrl-C stops it);
#                          SECURE=1: Kafka over SASL_SSL, a principal per component, ACLs
#   make test              ruff, mypy, pytest (real Kafka broker on free ports)
#   make lint | bench | chaos | kafka | k8s-tools | k8s-users | compose-secrets | clean | distclean

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Re-install only when pyproject.toml changed (or the venv is new).
STAMP := $(VENV)/.installed-stamp
WORKERS ?= 1
BENCH_ARGS ?=
CHAOS_ARGS ?=
PYTEST_ARGS ?=
# Debian packages the tooling needs: Kafka runs on Java 17+, is fetched with Maven, and the
# compose file is validated with docker-compose (no engine needed for `config`).
APT_PACKAGES := openjdk-17-jre-headless maven docker-compose
# kustomize renders k8s/ for the deployment tests; built from its Go module (pinned) into
# .local/bin when neither it nor a kubectl with kustomize v5 is on the machine.
KUSTOMIZE_VERSION := v5.7.1
KUSTOMIZE := .local/bin/kustomize

.PHONY: help install tools k8s-tools k8s-users compose-secrets kafka kafka-start kafka-stop kafka-status run test lint bench chaos clean distclean

help:
	@sed -n 's/^#   //p' $(MAKEFILE_LIST)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Installs only what is missing, so it costs nothing once done.
tools:
	@missing=""; \
	java_ok=0; if command -v java >/dev/null; then \
	  v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	  [ "$${v:-0}" -ge 17 ] && java_ok=1; fi; \
	[ $$java_ok = 1 ] || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; \
	  else echo "error: missing$$missing: install with apt-get install -y$$missing" >&2; exit 1; fi; \
	  echo "installing$$missing (apt)"; \
	  $$SUDO apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# kustomize for `kustomize build k8s/overlays/...` (the schemas come with the
# kubernetes-validate dev dependency, offline).
k8s-tools:
	@if [ -x $(KUSTOMIZE) ] || command -v kustomize >/dev/null; then exit 0; fi; \
	if command -v go >/dev/null; then \
	  echo "installing kustomize $(KUSTOMIZE_VERSION) (go install)"; \
	  GOBIN=$(CURDIR)/.local/bin go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION); \
	elif kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v5'; then exit 0; \
	else echo "error: kustomize missing: install Go (https://go.dev) or kustomize v5" >&2; exit 1; fi

# Secrets for docker-compose (never in the compose file): .local/compose/oms.env, grafana.env
# and secrets.json with fresh random values, and kafka/ (the broker's CA, certificates and
# keystore, a SCRAM password per service and desk, the ACLs and topics kafka-init applies);
# kept if they exist.
compose-secrets: install
	$(PY) -m oms_dev.devstack.compose_secrets .local/compose

# k8s/base/kafka-users.yaml from the ACL table (oms/kafka/acls.py), for the desks of
# OMS_DESKS in k8s/base/configmap.yaml.
k8s-users: install
	$(PY) -m oms_dev.devstack.k8s_users

kafka: install tools
	$(PY) -m oms_dev.devstack.kafka fetch

kafka-start: kafka
	$(PY) -m oms_dev.devstack.kafka start

kafka-stop: install
	$(PY) -m oms_dev.devstack.kafka stop

kafka-status: install
	$(PY) -m oms_dev.devstack.kafka status

run: kafka
	$(VENV)/bin/oms up --workers $(WORKERS)$(if $(SECURE), --secure)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy oms oms_dev
	$(VENV)/bin/lint-imports --no-cache

test: kafka lint k8s-tools
	$(VENV)/bin/pytest -q --durations=20 $(PYTEST_ARGS)

# Every scenario; BENCH_ARGS=--quick for the few-minute version. Writes bench/results/latest.*
bench: kafka
	$(VENV)/bin/oms bench all $(BENCH_ARGS)

chaos: kafka
	$(VENV)/bin/oms chaos run $(CHAOS_ARGS)

# Local state and caches; keeps the venv and the fetched Kafka jars (.local/kafka).
clean:
	-@[ -x $(PY) ] && $(PY) -m oms_dev.devstack.kafka stop >/dev/null 2>&1 || true
	find .local -mindepth 1 -maxdepth 1 ! -name kafka -exec rm -rf {} + 2>/dev/null || true
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} + 2>/dev/null || true

distclean: clean
	rm -rf .local $(VENV) *.egg-info
