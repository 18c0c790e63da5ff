#!/usr/bin/env bash
# The analytics service's two goals (issue 24), each beside a baseline of the same run:
#   1. consumer throughput on PostgreSQL (services/analytics/examples/consumer_bench.rs):
#      EVENTS progress events (default 50000) applied in batches, beside the bare
#      consumer of the same embedded bus and beside one event per transaction;
#   2. leaderboard reads through the gateway: `duovarsity up` on Redis with LEARNERS
#      learners (default 300) who completed lessons this week, then GET
#      /v1/leaderboards/global?limit=50 (the top 50 and the caller's rank) paced at RATE
#      requests/s (default 2000) for DURATION s (default 10), beside GET /v1/users/me at the
#      same rate; p50 and p99 of each, and where the boards were read from.
# 127.0.0.1 only; bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

events=${EVENTS:-50000}
learners=${LEARNERS:-300}
rate=${RATE:-2000}
duration=${DURATION:-10}
target=${CARGO_TARGET_DIR:-target}
command -v wrk >/dev/null || { echo "bench: installing wrk" >&2; apt-get install -y -qq wrk >&2; }
cargo build --release -p duovarsity-analytics --example consumer_bench >&2
eval "$(scripts/test-services.sh)"

echo "== consumer: $events progress events on PostgreSQL"
"$target/release/examples/consumer_bench" "$events" 2000

echo "== leaderboard reads at $rate/s through the gateway ($learners learners on the board)"
export DUOVARSITY_REDIS_URL=$DUOVARSITY_TEST_REDIS_URL
# Keys are not prefixed per platform: start from an empty Redis (the test server), so no
# cached catalog or board of an earlier run answers for this one.
redis-cli -u "$DUOVARSITY_REDIS_URL" --scan --pattern 'duovarsity:*' | xargs -r redis-cli -u "$DUOVARSITY_REDIS_URL" del >/dev/null
source scripts/bench-platform.sh
start_platform "${BENCH_HTTP_PORT:-18096}" "${BENCH_GRPC_PORT:-15096}" --seed
"$binary" seed --learners "$learners" >/dev/null
out=$(mktemp -d)
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data" "$work" "$out"' EXIT
# Every learner enrolls in a free course and completes 1 to 5 of its lessons.
python3 - "$base" "$learners" >"$out/token" <<'PY'
import concurrent.futures, json, sys, urllib.request
base, count = sys.argv[1], int(sys.argv[2])
def call(method, path, body=None, token=None):
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(request) as answer:
        return json.loads(answer.read() or b"{}")
course = call("GET", "/v1/courses/rust-fundamentals")
course_id = course["course"]["id"]
lessons = [l["id"] for s in course["sections"] for l in s["lessons"]]
def learn(i):
    token = call("POST", "/v1/auth/login", {"email": f"learner-{i}@load.duovarsity.test", "password": "load-test-password-2026"})["accessToken"]
    call("POST", f"/v1/courses/{course_id}/enrollments", {}, token)
    for lesson in lessons[: 1 + i % 5]:
        call("PUT", f"/v1/lessons/{lesson}/progress", {"percent": 100}, token)
    return token
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    tokens = list(pool.map(learn, range(count)))
print(tokens[count // 2])
PY
token=$(cat "$out/token")
board="$base/v1/leaderboards/global?limit=50"
for _ in $(seq 1 100); do
  [ "$(curl -sf "$board" -H "authorization: Bearer $token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["learners"])')" = "$learners" ] && break
  sleep 0.2
done
curl -sf "$board" -H "authorization: Bearer $token" | python3 -c 'import json,sys; b=json.load(sys.stdin); print("board:", b["learners"], "learners; the caller is", b["me"]["rank"], "with", b["me"]["xp"], "XP; top:", b["entries"][0])'

# Paced: 40 connections, each waiting (its share of a second, less about a millisecond an
# answer takes) so that together they offer RATE requests/s. A closed loop: a stall is
# not queued behind, so p99 is of answers, not of an open-loop arrival schedule.
printf 'function delay() return %s end\n' "$(python3 -c "print(max(0, int(40 * 1000 / $rate) - 1))")" >"$out/pace.lua"
measure() { # name url
  wrk -t2 -c40 -d"${duration}s" --latency -s "$out/pace.lua" -H "authorization: Bearer $token" "$2" >"$out/wrk" 2>&1
  printf '%-30s %8s req/s  p50 %-8s p99 %-8s non-2xx %s\n' "$1" \
    "$(awk '/Requests\/sec/ {print $2}' "$out/wrk")" "$(awk '$1 == "50%" {print $2}' "$out/wrk")" \
    "$(awk '$1 == "99%" {print $2}' "$out/wrk")" "$(awk '/Non-2xx/ {print $NF}' "$out/wrk" | grep . || echo 0)"
}
for round in 1 2; do
  measure "leaderboard (round $round)" "$board"
  measure "users/me (round $round)" "$base/v1/users/me"
done
curl -sf "$admin/metrics" | grep '^leaderboard_reads_total' || true
