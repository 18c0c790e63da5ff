#!/usr/bin/env bash
# Live delivery at scale: a release `duovarsity up` (embedded mode, demo catalog) and the
# ws_bench client in a second process opening CONNECTIONS (default 10000) idle WebSockets
# of one learner, then ROUNDS (default 5) progress changes fanned out to all of them.
# Reports server memory per idle connection and fan-out latency. 127.0.0.1 only; the
# client stops by itself (60 s bound per round).
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${CONNECTIONS:-10000}
rounds=${ROUNDS:-5}
http_port=${BENCH_HTTP_PORT:-18082}
grpc_port=${BENCH_GRPC_PORT:-15053}
base="http://127.0.0.1:$http_port"

target=${CARGO_TARGET_DIR:-target}
cargo build --release -p duovarsity >&2
cargo build --release -p duovarsity-tests --example ws_bench >&2

# Each connection is a socket on both sides; each process needs room for all of them.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

data=$(mktemp -d)
export DUOVARSITY_DATA_DIR="$data" DUOVARSITY_HTTP_ADDR="127.0.0.1:$http_port" DUOVARSITY_GRPC_ADDR="127.0.0.1:$grpc_port"
# All the connections belong to one learner: lift the per-user cap (16 by default).
export DUOVARSITY_LIVE_CONNECTIONS_PER_USER=$((connections + 1))
"$target/release/duovarsity" seed --demo >/dev/null 2>&1
RUST_LOG=warn "$target/release/duovarsity" up >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
  curl -sf "$base/readyz" >/dev/null && break
  sleep 0.1
done

echo "== $connections idle WebSockets on one process, then $rounds fan-outs"
"$target/release/examples/ws_bench" --base "$base" --pid "$server" \
  --connections "$connections" --rounds "$rounds"
