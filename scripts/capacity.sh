#!/usr/bin/env bash
# `make capacity`: measures the capacity model's inputs on this machine, then computes the
# model (scripts/capacity.py) into docs/capacity.md.
#
# 1. A cluster of one gateway and one replica of each service (scripts/cluster.sh) on
#    PostgreSQL, Redis and the Kafka-protocol broker, under the learner-mix load test
#    (RATE requests/s, default 150, for DURATION s, default 60, USERS users, default 150).
#    Before and after: each process's CPU time and memory, PostgreSQL's CPU time and
#    transactions, Redis commands, events published and applied, AI usage rows.
# 2. Live connections: scripts/bench-live.sh (LIVE_CONNECTIONS, default 10000, 3 rounds):
#    memory per idle connection and fan-out latency.
# 3. A single Redis shard: redis-benchmark (GET and SET, 50 clients, no pipelining).
#
# The measured inputs go to docs/capacity-inputs.json; prices are assumptions kept in
# scripts/capacity.py. 127.0.0.1 only; bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

rate=${RATE:-150}
users=${USERS:-150}
duration=${DURATION:-60}
target=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d)
trap 'scripts/cluster.sh down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

cargo build --release -p duovarsity -p duovarsity-load >&2
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
GATEWAYS=1 REPLICAS=1 LEARNERS=$users scripts/cluster.sh up >&2
cluster=${CLUSTER_DIR:-/tmp/duovarsity-cluster}

sql() { su postgres -c "psql -d dv_cluster -qAtc \"$1\""; }

# CPU ticks and RSS of every cluster process and of PostgreSQL, and the counters.
snapshot() {
  {
    echo "{\"processes\": {"
    first=1
    for name in $(scripts/cluster.sh names all); do
      pid=$(cat "$cluster/$name.pid")
      ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
      rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
      [ $first = 1 ] || echo ","
      first=0
      echo "\"$name\": {\"ticks\": $ticks, \"rss_kib\": $rss}"
    done
    echo "},"
    pg_ticks=0
    for pid in $(pgrep -x postgres || pgrep postgres); do
      t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
      pg_ticks=$((pg_ticks + t))
    done
    echo "\"postgres_ticks\": $pg_ticks,"
    echo "\"postgres_xacts\": $(sql "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'dv_cluster'"),"
    echo "\"redis_commands\": $(redis-cli -p 6379 info stats | awk -F: '/^total_commands_processed/ {print $2+0}'),"
    outbox=$(sql "SELECT string_agg(format('SELECT count(*) AS n, coalesce(sum(length(payload)), 0) AS b FROM %I WHERE sent_at IS NOT NULL', table_name), ' UNION ALL ') FROM information_schema.columns WHERE table_name LIKE '%\_outbox' AND column_name = 'payload'")
    echo "\"events_sent\": $(sql "SELECT coalesce(sum(n), 0) FROM ($outbox) t"),"
    echo "\"event_bytes\": $(sql "SELECT coalesce(sum(b), 0) FROM ($outbox) t"),"
    applied=$(sql "SELECT string_agg(format('SELECT count(*) AS n FROM %I', table_name), ' UNION ALL ') FROM information_schema.tables WHERE table_name LIKE '%\_processed\_events'")
    echo "\"events_applied\": $(sql "SELECT coalesce(sum(n), 0) FROM ($applied) t"),"
    echo "\"ai_provider_calls\": $(sql "SELECT count(*) FROM ai_usage WHERE cached = 0"),"
    echo "\"ai_provider_cost_nano\": $(sql "SELECT coalesce(sum(cost_nano), 0) FROM ai_usage WHERE cached = 0"),"
    echo "\"clock\": $(date +%s.%N)"
    echo "}"
  } >"$1"
}

echo "== cluster under load: $rate requests/s, $users users, $duration s" >&2
snapshot "$work/before.json"
"$target/release/duovarsity-load" -H "$(scripts/cluster.sh urls)" --rate "$rate" -u "$users" \
  -r 20 -t "${duration}s" --no-reset-metrics --out "$work/load" \
  --scenarios 'anonymousbrowsing,learnersession,instructorauthoring' >"$work/load.log" 2>&1 ||
  { cat "$work/load.log" >&2; exit 1; }
sleep 5 # events in flight reach their consumers
snapshot "$work/after.json"
scripts/cluster.sh down >&2

echo "== live connections" >&2
CONNECTIONS=${LIVE_CONNECTIONS:-10000} ROUNDS=3 scripts/bench-live.sh >"$work/live.txt" 2>"$work/live.err" || { tail -20 "$work/live.err" >&2; exit 1; }
cat "$work/live.txt" >&2

echo "== one Redis shard" >&2
redis-benchmark -p 6379 -q -n 200000 -c 50 -t get,set >"$work/redis.txt" 2>/dev/null
cat "$work/redis.txt" >&2

python3 scripts/capacity.py measure --ticks-per-second "$(getconf CLK_TCK)" \
  --cores "$(nproc)" --before "$work/before.json" --after "$work/after.json" \
  --load "$work/load/summary.json" --live "$work/live.txt" --redis "$work/redis.txt" \
  >docs/capacity-inputs.json
cp "$work/load/report.md" docs/capacity-load-report.md
python3 scripts/capacity.py model docs/capacity-inputs.json >docs/capacity.md
echo "capacity: docs/capacity.md (inputs: docs/capacity-inputs.json)" >&2
