#!/usr/bin/env bash
# Events end to end: state change + outbox row in one transaction (SQLite), relay, bus,
# idempotent consumer. For the embedded bus and for Kafka (tansu on 127.0.0.1:9092,
# started by scripts/test-services.sh): throughput at full speed (EVENTS, default 20000),
# then latency at a steady RATE (default 1000/s, 10 s).
set -euo pipefail
cd "$(dirname "$0")/.."

events=${EVENTS:-20000}
rate=${RATE:-1000}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p duovarsity-common --example events_bench >&2
eval "$(scripts/test-services.sh)"
bench="$target/release/examples/events_bench"
for bus in embedded kafka; do
  echo "== $bus bus"
  "$bench" --bus "$bus" --brokers "$DUOVARSITY_TEST_KAFKA_BROKERS" --events "$events"
  "$bench" --bus "$bus" --brokers "$DUOVARSITY_TEST_KAFKA_BROKERS" --events $((rate * 10)) --rate "$rate"
done
