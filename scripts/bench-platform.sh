# Sourced by the benchmark scripts: builds the release binary and starts
# `duovarsity up` on a throwaway data directory, on 127.0.0.1.
#   start_platform HTTP_PORT GRPC_PORT [--seed]
# Sets `binary`, `base` (the gateway URL), `data`, `work` and `server` (the pid), stops
# the server and removes the directories on exit, and returns once /readyz answers.
# `--seed` loads the demo catalog first; SEED_ARGS (for example `--courses 10000`) are
# passed to `duovarsity seed` before the start. DUOVARSITY_* variables set by the caller
# apply.
# Rate limits are off unless the caller sets DUOVARSITY_RATE_LIMITS_ENABLED: the load
# comes from one address and would measure the limiter's refusals.

start_platform() {
  local http_port=$1 grpc_port=$2 seed=${3:-}
  local target=${CARGO_TARGET_DIR:-target}
  # PLATFORM_BINARY: run that build (an older one, for a before/after) instead.
  if [ -n "${PLATFORM_BINARY:-}" ]; then
    binary=$PLATFORM_BINARY
  else
    cargo build --release -p duovarsity -p duovarsity-load >&2
    binary="$target/release/duovarsity"
  fi
  base="http://127.0.0.1:$http_port"
  # /metrics is on the admin listener, never the public one.
  admin="http://127.0.0.1:$((http_port + 2000))"
  data=$(mktemp -d)
  work=$(mktemp -d)
  export DUOVARSITY_DATA_DIR="$data" DUOVARSITY_HTTP_ADDR="127.0.0.1:$http_port" \
    DUOVARSITY_ADMIN_ADDR="127.0.0.1:$((http_port + 2000))" \
    DUOVARSITY_GRPC_ADDR="127.0.0.1:$grpc_port" \
    DUOVARSITY_RATE_LIMITS_ENABLED="${DUOVARSITY_RATE_LIMITS_ENABLED:-false}"
  if [ "$seed" = "--seed" ]; then
    "$binary" seed --demo >/dev/null 2>&1
  fi
  if [ -n "${SEED_ARGS:-}" ]; then
    # shellcheck disable=SC2086 # the arguments are words on purpose
    "$binary" seed $SEED_ARGS >&2
  fi
  RUST_LOG=warn "$binary" up >"$work/server.log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data" "$work"' EXIT
  for _ in $(seq 1 100); do
    curl -sf "$base/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "bench: the platform did not become ready; see $work/server.log" >&2
  return 1
}
