#!/usr/bin/env bash
# The AI router's added latency and its cache-hit rate: the ai_bench client starts a mock
# provider (OpenAI-compatible) and writes a catalog for it; a release `duovarsity up`
# loads that catalog; the client then sends open-loop load at fixed rates (RATES,
# default 500,2000 per second, SECONDS_PER_RATE each) straight to the mock and through
# the gateway, counting answers, refusals (503 OVERLOADED, 429) and other failures; then
# the rate the gateway sustains and an open-loop run at twice that (overload must be refused
# fast: refusal p99 against 50 ms, no pool timeouts); finally cache hits as fast as
# HIT_CLIENTS clients can ask.
# On a machine of two or more cores the platform runs on core 0 and the client (with the
# mock) on core 1 (SERVER_PIN / CLIENT_PIN override): sharing the cores, a client sending
# twice what the platform sustains falls seconds behind its own schedule and measures
# itself. 127.0.0.1 only; bounded by rate x time.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
cargo build --release -p duovarsity -p duovarsity-load >&2
cargo build --release -p duovarsity-tests --example ai_bench >&2
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SERVER_PIN=${SERVER_PIN-taskset -c 0}
  CLIENT_PIN=${CLIENT_PIN-taskset -c 1}
fi
port=${BENCH_HTTP_PORT:-18083}
work=$(mktemp -d)
catalog="$work/catalog.toml"
${CLIENT_PIN:-} "$target/release/examples/ai_bench" --catalog "$catalog" --base "http://127.0.0.1:$port" \
  --rates "${RATES:-500,2000}" --seconds "${SECONDS_PER_RATE:-8}" --hit-clients "${HIT_CLIENTS:-64}" &
client=$!
for _ in $(seq 1 100); do [ -s "$catalog" ] && break; sleep 0.1; done
DUOVARSITY_AI_CATALOG_FILE="$catalog" DUOVARSITY_DATA_DIR="$work/data" DUOVARSITY_RATE_LIMITS_ENABLED=false \
  DUOVARSITY_HTTP_ADDR="127.0.0.1:$port" DUOVARSITY_GRPC_ADDR="127.0.0.1:${BENCH_GRPC_PORT:-15054}" \
  RUST_LOG=warn ${SERVER_PIN:-} "$target/release/duovarsity" up >"$work/server.log" 2>&1 &
server=$!
# SERVER_LOG=FILE keeps the platform's log.
trap 'kill $server $client 2>/dev/null; wait $server 2>/dev/null; [ -z "${SERVER_LOG:-}" ] || cp "$work/server.log" "$SERVER_LOG"; rm -rf "$work"' EXIT
status=0
wait "$client" || status=$?
if [ "$status" != 0 ] || grep -q '"level":"ERROR"' "$work/server.log"; then
  echo "bench: see the server's log:" >&2
  grep -m5 '"level":"\(WARN\|ERROR\)"' "$work/server.log" >&2 || true
fi
exit "$status"
