#!/usr/bin/env bash
# Load benchmark of the gateway on 127.0.0.1: a release build of `duovarsity up` on a
# throwaway data directory, then wrk against POST /v1/auth/login and GET /v1/users/me.
# Bounded: each run lasts DURATION seconds (default 15). Prints idle memory and binary size.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-15}
connections=${CONNECTIONS:-64}
# Sign-ins are CPU- and memory-bound (argon2id); beyond 16 queued per core the service
# answers 429 by design, so the login run stays under that to measure capacity.
login_connections=${LOGIN_CONNECTIONS:-16}
threads=${THREADS:-2}

command -v wrk >/dev/null || { echo "bench: installing wrk" >&2; apt-get install -y -qq wrk >&2; }
source scripts/bench-platform.sh
start_platform "${BENCH_HTTP_PORT:-18080}" "${BENCH_GRPC_PORT:-15051}"
sleep 1
echo "== release binary: $(du -h "$binary" | cut -f1) ($(stat -c %s "$binary") bytes)"
echo "== idle RSS of duovarsity up: $(awk '/VmRSS/ {print $2, $3}' /proc/$server/status)"

curl -sf -X POST "$base/v1/auth/register" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"correct-horse-battery","displayName":"Bench"}' >/dev/null
token=$(curl -sf -X POST "$base/v1/auth/login" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"correct-horse-battery"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')

cat >"$work/login.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"email":"bench@example.com","password":"correct-horse-battery"}'
LUA

echo
echo "== GET /v1/users/me (JWT check at the gateway and in the service, one SQLite read)"
wrk -t"$threads" -c"$connections" -d"${duration}s" --latency \
  -H "authorization: Bearer $token" "$base/v1/users/me"

echo
echo "== POST /v1/auth/login (argon2id verification, refresh token write, JWT signing)"
wrk -t"$threads" -c"$login_connections" -d"${duration}s" --latency -s "$work/login.lua" "$base/v1/auth/login"

echo
echo "== RSS after load: $(awk '/VmRSS/ {print $2, $3}' /proc/$server/status)"
