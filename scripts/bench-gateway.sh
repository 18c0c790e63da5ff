#!/usr/bin/env bash
# The gateway's hot path against a bare axum handler, side by side in one run on
# 127.0.0.1 (issue 11's benchmark):
#   1. maximum throughput (wrk, CONNECTIONS connections) of the bare handler
#      (gateway/examples/bare_json.rs, serving the very JSON the platform answers) and of
#      `duovarsity up`: authenticated GET /v1/users/me and public GET /v1/courses/{slug};
#      ROUNDS rounds, interleaved; the ratios platform/bare;
#   2. latency at half of the platform's maximum rate (wrk paced with a Lua delay: a
#      closed loop, so queueing behind a stall is not counted as an open loop would);
#   3. overload: free learners flood GET /v1/users/me with FLOOD connections while premium
#      learners send a paced load; premium p99 alone and under the flood, and how many
#      free calls were shed (503). The upstream cap is small (UPSTREAM_CAP) so that
#      shedding, not queueing, absorbs the flood.
# BASELINE=path/to/an/older/duovarsity also runs that binary as a second platform (its own
# ports and data) and measures it in every round beside the current one: the before and
# after of a change in one run, as ratios to the same bare handler.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-8}
rounds=${ROUNDS:-2}
connections=${CONNECTIONS:-64}
flood=${FLOOD:-128}
upstream_cap=${UPSTREAM_CAP:-16}
command -v wrk >/dev/null || { echo "bench: installing wrk" >&2; apt-get install -y -qq wrk >&2; }
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p duovarsity-gateway --example bare_json >&2
export DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL=admin@example.com DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD=correct-horse-battery
source scripts/bench-platform.sh
bare_addr=127.0.0.1:${BENCH_BARE_PORT:-18087}
bare="http://$bare_addr"
out=$(mktemp -d)

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
post() { curl -sf -X "$1" "$base$2" -H 'content-type: application/json' "${@:4}" -d "$3"; }
signup() { # email tier -> token (the tier set by the admin, then a fresh sign-in)
  local id
  post POST /v1/auth/register "{\"email\":\"$1\",\"password\":\"correct-horse-battery\",\"displayName\":\"B\"}" >/dev/null
  id=$(post POST /v1/auth/login "{\"email\":\"$1\",\"password\":\"correct-horse-battery\"}" | json '["user"]["id"]')
  if [ "$2" != free ]; then
    post POST "/v1/users/$id:setTier" "{\"tier\":\"TIER_${2^^}\"}" -H "authorization: Bearer $admin" >/dev/null
  fi
  post POST /v1/auth/login "{\"email\":\"$1\",\"password\":\"correct-horse-battery\"}" | json '["accessToken"]'
}
# A seeded platform with a free and a premium learner (tokens in $token and $premium).
platform() {
  start_platform "${BENCH_HTTP_PORT:-18086}" "${BENCH_GRPC_PORT:-15086}" --seed
  admin=$(post POST /v1/auth/login '{"email":"admin@example.com","password":"correct-horse-battery"}' | json '["accessToken"]')
  token=$(signup bench@example.com free)
  premium=$(signup premium@example.com premium)
}
platform
slug=rust-fundamentals

# The bare server answers what the platform answers.
curl -sf "$base/v1/users/me" -H "authorization: Bearer $token" >"$out/me.json"
curl -sf "$base/v1/courses/$slug" >"$out/course.json"
"$target/release/examples/bare_json" "$bare_addr" "$out" &
bare_pid=$!
cleanup() { kill "$server" "$bare_pid" 2>/dev/null; wait "$server" "$bare_pid" 2>/dev/null; rm -rf "$data" "$work" "$out"; }
trap 'status=$?; cleanup; exit $status' EXIT
for _ in $(seq 1 50); do curl -sf "$bare/v1/courses/$slug" >/dev/null && break; sleep 0.1; done

# The baseline platform, when asked for: seeded, with a free learner's token.
baseline_pid=
if [ -n "${BASELINE:-}" ]; then
  baseline_data=$(mktemp -d)
  baseline_base="http://127.0.0.1:${BENCH_BASELINE_HTTP_PORT:-18186}"
  (
    export DUOVARSITY_DATA_DIR="$baseline_data" \
      DUOVARSITY_HTTP_ADDR="127.0.0.1:${BENCH_BASELINE_HTTP_PORT:-18186}" \
      DUOVARSITY_ADMIN_ADDR="127.0.0.1:${BENCH_BASELINE_ADMIN_PORT:-18188}" \
      DUOVARSITY_GRPC_ADDR="127.0.0.1:${BENCH_BASELINE_GRPC_PORT:-15186}"
    "$BASELINE" seed --demo >/dev/null 2>&1
    RUST_LOG=warn exec "$BASELINE" up >"$out/baseline.log" 2>&1
  ) &
  baseline_pid=$!
  for _ in $(seq 1 100); do curl -sf "$baseline_base/readyz" >/dev/null && break; sleep 0.1; done
  saved_base=$base base=$baseline_base
  baseline_token=$(signup bench@example.com free)
  base=$saved_base
fi
cleanup() { kill "$server" "$bare_pid" $baseline_pid 2>/dev/null; wait "$server" "$bare_pid" $baseline_pid 2>/dev/null; rm -rf "$data" "$work" "$out" "${baseline_data:-}"; }

# wrk NAME URL [wrk options]: appends "name rps p50 p99 non2xx" to results.
measure() {
  local name=$1 url=$2; shift 2
  wrk -t2 -d"${duration}s" --latency "$@" "$url" >"$out/wrk" 2>&1
  echo "$name $(awk '/Requests\/sec/ {print $2}' "$out/wrk") $(awk '$1 == "50%" {print $2}' "$out/wrk") $(awk '$1 == "99%" {print $2}' "$out/wrk") $(awk '/Non-2xx/ {print $NF}' "$out/wrk" | grep . || echo 0)" >>"$out/results"
}
for round in $(seq 1 "$rounds"); do
  echo "== round $round" >&2
  measure bare-me "$bare/v1/users/me" -c"$connections" -H "authorization: Bearer $token"
  measure platform-me "$base/v1/users/me" -c"$connections" -H "authorization: Bearer $token"
  measure bare-course "$bare/v1/courses/$slug" -c"$connections"
  measure platform-course "$base/v1/courses/$slug" -c"$connections"
  if [ -n "$baseline_pid" ]; then
    measure baseline-me "$baseline_base/v1/users/me" -c"$connections" -H "authorization: Bearer $baseline_token"
    measure baseline-course "$baseline_base/v1/courses/$slug" -c"$connections"
  fi
done

# Paced: each of 8 connections waits so that together they offer about RATE req/s.
paced() { # name url rate [wrk options]
  local name=$1 url=$2 rate=$3; shift 3
  printf 'function delay() return %s end\n' "$(python3 -c "print(max(0, int(8 * 1000 / $rate)))")" >"$out/pace.lua"
  measure "$name" "$url" -c8 -s "$out/pace.lua" "$@"
}
half() { awk -v n="$1" '$1 == n {s += $2; c++} END {printf "%d", s / c / 2}' "$out/results"; }
paced half-me "$base/v1/users/me" "$(half platform-me)" -H "authorization: Bearer $token"
paced half-course "$base/v1/courses/$slug" "$(half platform-course)"

# Overload, on a platform whose upstream cap is small: premium alone, then premium while
# free learners flood. (The baseline, if any, is stopped: it is measured above only.)
if [ -n "$baseline_pid" ]; then
  kill "$baseline_pid"
  wait "$baseline_pid" 2>/dev/null || true
  baseline_pid=
fi
kill "$server"
wait "$server" 2>/dev/null || true
rm -rf "$data" "$work"
# overload PREFIX: premium alone, then under the flood, on the running platform.
overload() {
  paced "${1}premium-alone" "$base/v1/users/me" "$premium_rate" -H "authorization: Bearer $premium"
  wrk -t1 -c"$flood" -d"$((duration + 2))s" -H "authorization: Bearer $token" "$base/v1/users/me" >"$out/flood" 2>&1 &
  flood_pid=$!
  sleep 1
  paced "${1}premium-flooded" "$base/v1/users/me" "$premium_rate" -H "authorization: Bearer $premium"
  wait $flood_pid
  echo "${1}flood $(awk '/requests in/ {print $1}' "$out/flood") $(awk '/Non-2xx/ {print $NF}' "$out/flood" | grep . || echo 0)" >>"$out/floods"
}
premium_rate=${PREMIUM_RATE:-500}
DUOVARSITY_UPSTREAM_MAX_IN_FLIGHT=$upstream_cap platform
trap 'status=$?; cleanup; exit $status' EXIT
overload ""
if [ -n "${BASELINE:-}" ]; then
  kill "$server"
  wait "$server" 2>/dev/null || true
  rm -rf "$data" "$work"
  DUOVARSITY_UPSTREAM_MAX_IN_FLIGHT=$upstream_cap PLATFORM_BINARY=$BASELINE platform
  trap 'status=$?; cleanup; exit $status' EXIT
  overload baseline-
fi

python3 - "$out/results" "$out/floods" "$flood" <<'PY'
import collections, re, sys
def ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, rps, p50, p99, non2xx = line.split()
    runs[name].append((float(rps), ms(p50), ms(p99), int(non2xx)))
print(f"{'run':<17} {'req/s (each round)':<22} {'p50 ms':>7} {'p99 ms':>7} non-2xx")
for name, values in runs.items():
    print(f"{name:<17} {' '.join(f'{v[0]:.0f}' for v in values):<22} {values[-1][1]:>7.2f} {values[-1][2]:>7.2f} {sum(v[3] for v in values)}")
mean = {name: sum(v[0] for v in values) / len(values) for name, values in runs.items()}
print(f"\n/v1/users/me: platform/bare = {mean['platform-me'] / mean['bare-me']:.3f} (goal >= 0.35)")
print(f"/v1/courses/{{slug}}: platform/bare = {mean['platform-course'] / mean['bare-course']:.3f} (goal >= 0.6)")
if "baseline-me" in mean:
    print(f"baseline (BASELINE): /v1/users/me {mean['baseline-me'] / mean['bare-me']:.3f}, "
          f"/v1/courses/{{slug}} {mean['baseline-course'] / mean['bare-course']:.3f} of bare; "
          f"current/baseline: {mean['platform-me'] / mean['baseline-me']:.3f} and "
          f"{mean['platform-course'] / mean['baseline-course']:.3f}")
for name in ("half-me", "half-course"):
    print(f"{name}: {mean[name]:.0f} req/s, p99 {runs[name][-1][2]:.2f} ms (goal <= 5 ms)")
floods = {line.split()[0]: line.split()[1:] for line in open(sys.argv[2])}
for prefix in ("", "baseline-"):
    if f"{prefix}premium-alone" not in runs:
        continue
    alone, flooded = runs[f"{prefix}premium-alone"][-1][2], runs[f"{prefix}premium-flooded"][-1][2]
    total, shed = floods[f"{prefix}flood"]
    print(f"{prefix or 'current '}overload: premium p99 {alone:.2f} ms alone, {flooded:.2f} ms under a flood of "
          f"{sys.argv[3]} free connections = {flooded / alone:.2f}x (goal <= 2x); free calls shed: {shed} of "
          f"{total}; premium non-2xx: {runs[f'{prefix}premium-flooded'][-1][3]}")
PY
