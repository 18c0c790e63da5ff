#!/usr/bin/env bash
# What the gateway's rate limits cost, side by side in one run on 127.0.0.1: wrk against
# an authenticated GET /v1/users/me (limited per user) and an anonymous GET of the JWKS
# (limited per address), with limits off, local (in memory), and shared through Redis
# (against the same platform with Redis and limits off, since Redis also carries the L2
# cache). Limits are set far above the offered load, so every call pays for a decision
# and none is refused. Each configuration runs ROUNDS times, interleaved; prints req/s,
# p99, and the ratios. Needs Redis on DUOVARSITY_BENCH_REDIS_URL (default the test one).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-8}
rounds=${ROUNDS:-2}
connections=${CONNECTIONS:-32}
redis_url=${DUOVARSITY_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
command -v wrk >/dev/null || { echo "bench: installing wrk" >&2; apt-get install -y -qq wrk >&2; }
source scripts/bench-platform.sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# One configuration: NAME then DUOVARSITY_* assignments. Appends "name route rps p99".
run() {
  local name=$1; shift
  (
    export "$@" DUOVARSITY_RATE_LIMIT_FREE_READS=1000000/s DUOVARSITY_RATE_LIMIT_ANONYMOUS=1000000/s
    start_platform "${BENCH_HTTP_PORT:-18085}" "${BENCH_GRPC_PORT:-15085}" >/dev/null
    curl -sf -X POST "$base/v1/auth/register" -H 'content-type: application/json' \
      -d '{"email":"limits@example.com","password":"correct-horse-battery","displayName":"L"}' >/dev/null
    token=$(curl -sf -X POST "$base/v1/auth/login" -H 'content-type: application/json' \
      -d '{"email":"limits@example.com","password":"correct-horse-battery"}' |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')
    for route in /v1/users/me /.well-known/jwks.json; do
      auth=()
      [ "$route" = /v1/users/me ] && auth=(-H "authorization: Bearer $token")
      wrk -t2 -c"$connections" -d"${duration}s" --latency "${auth[@]}" "$base$route" >"$out/wrk" 2>&1
      rps=$(awk '/Requests\/sec/ {print $2}' "$out/wrk")
      p99=$(awk '$1 == "99%" {print $2}' "$out/wrk")
      non2xx=$(awk '/Non-2xx/ {print $NF}' "$out/wrk")
      echo "$name $route $rps $p99 ${non2xx:-0}" >>"$out/results"
    done
  )
}

for round in $(seq 1 "$rounds"); do
  echo "== round $round" >&2
  run off DUOVARSITY_RATE_LIMITS_ENABLED=false
  run local DUOVARSITY_RATE_LIMITS_ENABLED=true
  run redis-off DUOVARSITY_RATE_LIMITS_ENABLED=false DUOVARSITY_REDIS_URL="$redis_url"
  run redis DUOVARSITY_RATE_LIMITS_ENABLED=true DUOVARSITY_REDIS_URL="$redis_url"
done

python3 - "$out/results" <<'PY'
import collections, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, route, rps, p99, non2xx = line.split()
    runs[(name, route)].append((float(rps), p99, int(non2xx)))
print(f"{'configuration':<12} {'route':<24} {'req/s (each round)':<28} {'p99 (last)':<10} non-2xx")
for (name, route), values in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    print(f"{name:<12} {route:<24} {' '.join(f'{v[0]:.0f}' for v in values):<28} {values[-1][1]:<10} {sum(v[2] for v in values)}")
mean = {key: sum(v[0] for v in values) / len(values) for key, values in runs.items()}
for route in sorted({route for _, route in runs}):
    print(f"{route}: local/off = {mean[('local', route)] / mean[('off', route)]:.3f}, "
          f"redis/redis-off = {mean[('redis', route)] / mean[('redis-off', route)]:.3f}")
PY
