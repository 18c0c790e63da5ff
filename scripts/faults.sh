#!/usr/bin/env bash
# Faults under load, against the cluster of scripts/cluster.sh: for each fault a fresh
# cluster, the learner-mix load test (without purchases: a cluster has no payment
# sandbox) over every gateway for DURATION seconds, and the fault FAULT_AT seconds in.
# Then, once events have settled, effects are counted in PostgreSQL:
#   - failed requests (all, and idempotent reads), from the load report;
#   - live progress frames received against expected;
#   - events lost or applied twice: completed lessons against "Lesson completed" inbox
#     rows, active enrollments against "Enrollment confirmed" rows, accounts against
#     welcome rows, and inbox rows that share an event id.
#
#   scripts/faults.sh [FAULT...]   (default: all five)
#     rolling-restart   every process, one after the other: SIGTERM, then a new one
#     sigkill           SIGKILL of course-1; a new one 5 s later
#     redis-restart     Redis shut down and started again 2 s later
#     broker-stop       the Kafka broker frozen (SIGSTOP) for 10 s, then SIGCONT
#     postgres-restart  PostgreSQL restarted (pg_ctlcluster restart)
#
# RATE (default 100), USERS (default 100), DURATION (default 60), FAULT_AT (default 15),
# OUT (default fault-report). Writes OUT/faults.md, OUT/<fault>/report.md (the load test's
# report), OUT/<fault>.log (its console) and OUT/<fault>-logs/ (every process's log).
# 127.0.0.1 only; every step is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

rate=${RATE:-100}
users=${USERS:-100}
duration=${DURATION:-60}
fault_at=${FAULT_AT:-15}
out=${OUT:-fault-report}
target=${CARGO_TARGET_DIR:-target}
faults=("$@")
[ ${#faults[@]} -gt 0 ] || faults=(rolling-restart sigkill redis-restart broker-stop postgres-restart)

cargo build --release -p duovarsity -p duovarsity-load >&2
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$out"
export LEARNERS=$users

sql() {
  su postgres -c "psql -d dv_cluster -qAtc \"$1\""
}

inject() {
  case $1 in
    rolling-restart)
      for name in $(scripts/cluster.sh names all); do
        scripts/cluster.sh restart "$name"
        sleep 1
      done
      ;;
    sigkill)
      scripts/cluster.sh kill course-1
      sleep 5
      scripts/cluster.sh start course-1
      ;;
    redis-restart)
      redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true
      sleep 2
      redis-server --daemonize yes --port 6379 --bind 127.0.0.1 --save '' --appendonly no >/dev/null
      ;;
    broker-stop)
      broker=$(pgrep -f 'tansu broker' | head -1)
      kill -STOP "$broker"
      sleep 10
      kill -CONT "$broker"
      ;;
    postgres-restart)
      version=$(ls /etc/postgresql | sort -n | tail -1)
      pg_ctlcluster "$version" main restart
      ;;
    *) echo "faults: unknown fault $1" >&2; exit 2 ;;
  esac
}

{
  echo "| fault | requests | failed | failed reads | live frames received / expected | lessons completed / inbox rows | enrollments / inbox rows | accounts / welcomes | inbox rows applied twice |"
  echo "|---|---:|---:|---:|---|---|---|---|---:|"
} >"$out/faults.md"

for fault in "${faults[@]}"; do
  echo "== $fault" >&2
  scripts/cluster.sh up >&2
  hosts=$(scripts/cluster.sh urls)
  first=${hosts%%,*}
  rest=${hosts#*,}
  [ "$rest" = "$hosts" ] && rest=""
  "$target/release/duovarsity-load" -H "$first" ${rest:+--also "$rest"} --rate "$rate" -u "$users" \
    -r "$users" -t "${duration}s" --no-reset-metrics --out "$out/$fault" \
    --scenarios 'anonymousbrowsing,learnersession,instructorauthoring' \
    >"$out/$fault.log" 2>&1 &
  load=$!
  sleep "$fault_at"
  echo "   injecting $fault" >&2
  inject "$fault" >&2
  wait $load || { echo "faults: the load test failed; see $out/$fault.log" >&2; exit 1; }
  # Let relays and consumers catch up before counting effects.
  sleep 10
  summary="$out/$fault/summary.json"
  read -r requests failed failed_reads received expected < <(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(s["requests"], s["failed"], s["failed_reads"], s["live"]["received"], s["live"]["expected"])' "$summary")
  completed=$(sql "SELECT count(*) FROM lesson_progress WHERE completed_at IS NOT NULL")
  completed_rows=$(sql "SELECT count(*) FROM notifications WHERE title = 'Lesson completed'")
  enrolled=$(sql "SELECT count(*) FROM enrollments WHERE status IN ('active', 'completed')")
  enrolled_rows=$(sql "SELECT count(*) FROM notifications WHERE title = 'Enrollment confirmed'")
  accounts=$(sql "SELECT count(*) FROM users")
  welcomes=$(sql "SELECT count(*) FROM notifications WHERE title = 'Welcome to Duovarsity'")
  twice=$(sql "SELECT count(*) - count(DISTINCT (user_id, event_id)) FROM notifications")
  echo "| $fault | $requests | $failed | $failed_reads | $received / $expected | $completed / $completed_rows | $enrolled / $enrolled_rows | $accounts / $welcomes | $twice |" >>"$out/faults.md"
  scripts/cluster.sh status >"$out/$fault.status"
  scripts/cluster.sh down >&2
  rm -rf "$out/$fault-logs"
  cp -r "${CLUSTER_DIR:-/tmp/duovarsity-cluster}/logs" "$out/$fault-logs"
done
cat "$out/faults.md"
