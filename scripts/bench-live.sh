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

target=${CARGO_TARGET_DIR:-target}
cargo build --release -p duovarsity -p duovarsity-load >&2

# Each connection is a socket on both sides; each process needs room for all of them.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# All the connections belong to one learner: lift the per-user cap (16 by default).
export DUOVARSITY_LIVE_CONNECTIONS_PER_USER=$((connections + 1))
source scripts/bench-platform.sh
start_platform "${BENCH_HTTP_PORT:-18082}" "${BENCH_GRPC_PORT:-15053}" --seed

echo "== $connections idle WebSockets on one process, then $rounds fan-outs"
"$target/release/ws_bench" --base "$base" --pid "$server" \
  --connections "$connections" --rounds "$rounds"
