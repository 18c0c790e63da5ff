#!/usr/bin/env bash
# Live fan-out, ours beside a bare tokio WebSocket broadcast server, in one run: a release
# `duovarsity up` (embedded mode) and `gateway/examples/bare_ws.rs`, each measured by the
# ws_bench client in a second process with the same sockets and the same frames:
#   - CONNECTIONS (10000) sockets, each in room 0 and one of ROOMS (100) smaller rooms:
#     memory per idle socket, ROUNDS (5) fan-outs of one message to room 0, then SECONDS
#     (10) of messages to the small rooms (frames delivered per second, CPU per frame);
#   - MAX_CONNECTIONS (19000) sockets: memory per idle socket at the most this container
#     allows (its hard limit of open files is 20000 per process, and each socket is one
#     descriptor in the server and one in the client).
# 127.0.0.1 only; every phase is bounded in time and the client stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${CONNECTIONS:-10000}
max_connections=${MAX_CONNECTIONS:-19000}
rooms=${ROOMS:-100}
rounds=${ROUNDS:-5}
seconds=${SECONDS_OF_LOAD:-10}

target=${CARGO_TARGET_DIR:-target}
cargo build --release -p duovarsity -p duovarsity-load >&2
cargo build --release -p duovarsity-gateway --example bare_ws >&2

# Each socket is a descriptor on both sides; each process needs room for all of them.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# All the sockets belong to one learner: lift the per-user cap (16 by default). The
# bootstrap admin creates the rooms' courses and posts the announcements.
export DUOVARSITY_LIVE_CONNECTIONS_PER_USER=$((max_connections + 1))
# The throughput phase posts thousands of announcements a second to each room.
export DUOVARSITY_ANNOUNCEMENTS_PER_HOUR=1000000
export DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL=bench-admin@example.com
export DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD=bench-admin-password-2026
source scripts/bench-platform.sh

bare_port=${BENCH_BARE_PORT:-18090}
run_bare() {
  "$target/release/examples/bare_ws" "127.0.0.1:$bare_port" &
  local bare=$!
  for _ in $(seq 1 50); do
    curl -s -o /dev/null "http://127.0.0.1:$bare_port/ws" && break
    sleep 0.1
  done
  "$target/release/ws_bench" --target bare --base "http://127.0.0.1:$bare_port" --pid "$bare" "$@"
  kill "$bare"
  wait "$bare" 2>/dev/null || true
}

run_platform() {
  start_platform "${BENCH_HTTP_PORT:-18082}" "${BENCH_GRPC_PORT:-15053}"
  "$target/release/ws_bench" --target platform --base "$base" --pid "$server" "$@"
  kill "$server"
  wait "$server" 2>/dev/null || true
  rm -rf "$data" "$work"
  trap - EXIT
}

echo "== $connections sockets in room 0 and $rooms rooms: ours, then the bare server"
run_platform --connections "$connections" --rooms "$rooms" --rounds "$rounds" --seconds "$seconds"
run_bare --connections "$connections" --rooms "$rooms" --rounds "$rounds" --seconds "$seconds"

echo "== $max_connections idle sockets: memory per socket, ours, then the bare server"
run_platform --connections "$max_connections" --rooms "$rooms" --rounds 1 --seconds 0
run_bare --connections "$max_connections" --rooms "$rooms" --rounds 1 --seconds 0
