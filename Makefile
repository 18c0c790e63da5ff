# Duovarsity: the two commands that matter are `make run` and `make test`.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/duovarsity-target

.PHONY: run test lint fmt bench e2e test-services build release helm load capacity

## Start the whole platform in one process (SQLite, in-process everything).
run:
	cargo run --release

## The whole test suite: installs grpcurl, starts PostgreSQL, then runs every test.
test:
	scripts/test-deps.sh
	eval "$$(scripts/test-services.sh)" && cargo test --workspace --all-targets --no-fail-fast

## Black-box tests of the running platform only.
e2e:
	scripts/test-deps.sh
	eval "$$(scripts/test-services.sh)" && cargo test -p duovarsity-tests

## The chart (lint, render, Kubernetes schemas, hardening), image, compose file and alert
## rules, as the test suite checks them.
helm:
	scripts/test-deps.sh
	cargo test -p duovarsity-tests --test deploy -- --skip dashboards

## Formatting, no import cycle between the modules of any crate, and clippy, as CI runs them.
lint:
	cargo fmt --all -- --check
	python3 scripts/check-import-cycles.py
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

build:
	cargo build --workspace

release:
	cargo build --release -p duovarsity

## Benchmarks on 127.0.0.1 against release builds: sign-in and /users/me (wrk), Zipf
## catalog and lesson reads with the cache hit rate (wrk), events through outbox, bus and
## consumer (in-process and Kafka), 10,000 live WebSockets with fan-out latency, payments,
## the AI router (added latency, and overload at twice the sustained rate: refused fast),
## rate limits, the gateway against a bare handler, analytics (the consumer on
## PostgreSQL beside the bare bus; leaderboard reads at 2,000/s beside /v1/users/me), and
## discovery (10,000 courses: ingest, index build, search at 500/s in the service and
## through the gateway beside the catalog's query filter, publish to searchable).
bench:
	cargo bench -p duovarsity-common --bench flags
	scripts/bench.sh
	scripts/bench-catalog.sh
	scripts/bench-events.sh
	scripts/bench-live.sh
	scripts/bench-payments.sh
	scripts/bench-ai.sh
	scripts/bench-limits.sh
	scripts/bench-gateway.sh
	scripts/bench-analytics.sh
	scripts/bench-discovery.sh

## The learner-mix load test (goose) against a local platform with the demo catalog, 60 s;
## BASE_URL=... for another platform. Writes load-report/report.md (see scripts/load.sh).
load:
	scripts/load.sh

## Measure the capacity model's inputs (a process cluster under load, live connections, a
## Redis shard) and compute docs/capacity.md from them (see scripts/capacity.sh).
capacity:
	scripts/capacity.sh
