#!/usr/bin/env bash
# `make load`: the learner-mix load test (crates/load, goose) and its report.
#
# Without BASE_URL: builds release binaries, starts a local `duovarsity up` on a
# throwaway data directory with the demo catalog, seeds USERS load-test learners, and runs
# the load test against it. With BASE_URL (any running platform whose learners were
# seeded with `duovarsity seed --learners USERS`): runs against that.
#
#   RATE      requests per second to hold (default 300)
#   USERS     goose users, one learner each (default 200)
#   DURATION  seconds (default 60), after a ramp of USERS/20 seconds
#   OUT       report directory (default load-report)
#   LOAD_ARGS more goose options (see `duovarsity-load --help`)
#
# Writes OUT/report.md, OUT/timeline.svg, OUT/summary.json and OUT/goose.html.
# 127.0.0.1 only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

rate=${RATE:-300}
users=${USERS:-200}
duration=${DURATION:-60}
out=${OUT:-load-report}
target=${CARGO_TARGET_DIR:-target}

cargo build --release -p duovarsity -p duovarsity-load >&2
# Each user keeps a WebSocket; the learners of a big run need room for theirs.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [ -z "${BASE_URL:-}" ]; then
  source scripts/bench-platform.sh
  start_platform "${LOAD_HTTP_PORT:-18090}" "${LOAD_GRPC_PORT:-15090}" --seed
  "$binary" seed --learners "$users" 2>/dev/null
  BASE_URL=$base
fi

# shellcheck disable=SC2086 # LOAD_ARGS is a list of options
"$target/release/duovarsity-load" -H "$BASE_URL" --rate "$rate" -u "$users" \
  -t "${duration}s" --out "$out" ${LOAD_ARGS:-}
