#!/usr/bin/env bash
# A distributed Duovarsity on one machine, as processes: GATEWAYS gateways and REPLICAS
# replicas of every service of the module table, on PostgreSQL, Redis and a Kafka-protocol
# broker (started by scripts/test-services.sh), the topology of the Helm chart.
#
#   scripts/cluster.sh up          # fresh database, migrations, demo catalog, LEARNERS learners
#   scripts/cluster.sh status      # every process: alive or not, port, memory
#   scripts/cluster.sh urls        # the gateways' base URLs, comma-separated
#   scripts/cluster.sh restart NAME   # SIGTERM, wait for the exit, start it again (e.g. course-1)
#   scripts/cluster.sh kill NAME      # SIGKILL
#   scripts/cluster.sh start NAME     # start one that is not running
#   scripts/cluster.sh names [KIND]   # process names (KIND: a service, gateway, or all)
#   scripts/cluster.sh down        # stop every process
#
# GATEWAYS (default 2), REPLICAS (default 2), LEARNERS (default 200), CLUSTER_DIR (default
# /tmp/duovarsity-cluster: logs, pids, data). 127.0.0.1 only. Payments use the Razorpay
# sandbox of `duovarsity up` only, so a cluster has no payment provider to buy from; the
# payment service runs and answers everything else.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${CLUSTER_DIR:-/tmp/duovarsity-cluster}
target=${CARGO_TARGET_DIR:-target}
binary="$target/release/duovarsity"
services=(user course content notification payment ai-routing analytics discovery)
database=dv_cluster

log() { echo "cluster: $*" >&2; }

grpc_port() { # service index, replica (1-based)
  echo $((16000 + $1 * 10 + $2))
}

config() {
  gateways=$(cat "$dir/gateways")
  replicas=$(cat "$dir/replicas")
}

url_of() { # service -> comma-separated endpoints of its replicas
  local index=$1 list="" r
  for r in $(seq 1 "$replicas"); do
    list+="${list:+,}http://127.0.0.1:$(grpc_port "$index" "$r")"
  done
  echo "$list"
}

# The environment every process shares.
shared_env() {
  # shellcheck disable=SC1091
  source "$dir/services.env"
  export DUOVARSITY_KAFKA_BROKERS=$DUOVARSITY_TEST_KAFKA_BROKERS \
    DUOVARSITY_REDIS_URL=$DUOVARSITY_TEST_REDIS_URL
  export DUOVARSITY_DATABASE_URL="postgres://duovarsity:duovarsity@127.0.0.1:5432/$database"
  export DUOVARSITY_KAFKA_TOPIC_PREFIX
  DUOVARSITY_KAFKA_TOPIC_PREFIX=$(cat "$dir/topic-prefix")
  # 16 per pool by default: a dozen processes would pass PostgreSQL's 100 connections.
  export DUOVARSITY_DATABASE_MAX_CONNECTIONS="${DUOVARSITY_DATABASE_MAX_CONNECTIONS:-6}"
  export DUOVARSITY_JWT_KEYS_DIR="$dir/keys" DUOVARSITY_MIGRATE_ON_START=false \
    DUOVARSITY_RATE_LIMITS_ENABLED=false DUOVARSITY_LOG_FORMAT=json
  local i name
  for i in "${!services[@]}"; do
    name=$(echo "${services[$i]}" | tr 'a-z-' 'A-Z_')
    export "DUOVARSITY_${name}_SERVICE_URL=$(url_of "$i")"
  done
}

start_one() { # name: <service>-<replica> or gateway-<n>
  local name=$1 kind=${1%-*} n=${1##*-} i port
  config
  mkdir -p "$dir/data/$name" "$dir/logs"
  if [ "$kind" = gateway ]; then
    port=$((18100 + n))
    (
      shared_env
      export DUOVARSITY_DATA_DIR="$dir/data/$name" DUOVARSITY_HTTP_ADDR="127.0.0.1:$port" \
        DUOVARSITY_GRPC_ADDR="127.0.0.1:$((16900 + n))" DUOVARSITY_ADMIN_ADDR="127.0.0.1:$((19100 + n))"
      exec "$binary" serve gateway >>"$dir/logs/$name.log" 2>&1
    ) &
    echo $! >"$dir/$name.pid"
    for _ in $(seq 1 300); do
      curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
      sleep 0.1
    done
  else
    for i in "${!services[@]}"; do [ "${services[$i]}" = "$kind" ] && break; done
    [ "${services[$i]}" = "$kind" ] || { log "no service $kind"; return 2; }
    port=$(grpc_port "$i" "$n")
    (
      shared_env
      export DUOVARSITY_DATA_DIR="$dir/data/$name" DUOVARSITY_GRPC_ADDR="127.0.0.1:$port" \
        DUOVARSITY_ADMIN_ADDR="127.0.0.1:$((port + 3000))"
      exec "$binary" serve "$kind" >>"$dir/logs/$name.log" 2>&1
    ) &
    echo $! >"$dir/$name.pid"
    for _ in $(seq 1 300); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
      sleep 0.1
    done
  fi
  log "$name did not come up; see $dir/logs/$name.log"
  return 1
}

names() { # [kind]
  config
  local kind=${1:-all} s r
  for s in "${services[@]}"; do
    [ "$kind" = all ] || [ "$kind" = "$s" ] || continue
    for r in $(seq 1 "$replicas"); do echo "$s-$r"; done
  done
  if [ "$kind" = all ] || [ "$kind" = gateway ]; then
    for r in $(seq 1 "$gateways"); do echo "gateway-$r"; done
  fi
}

pid_of() { cat "$dir/$1.pid" 2>/dev/null || true; }

alive() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

stop_one() { # name signal
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] || return 0
  kill "-$2" "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/$1.pid"; return 0; }
    sleep 0.1
  done
  log "$1 ($pid) still runs 30 s after SIG$2; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/$1.pid"
}

case ${1:-} in
  up)
    cargo build --release -p duovarsity -p duovarsity-load >&2
    [ -d "$dir" ] && [ -n "$(ls "$dir"/*.pid 2>/dev/null)" ] && "$0" down
    rm -rf "$dir"
    mkdir -p "$dir/keys"
    echo "${GATEWAYS:-2}" >"$dir/gateways"
    echo "${REPLICAS:-2}" >"$dir/replicas"
    echo "cluster$(date +%s)." >"$dir/topic-prefix"
    scripts/test-services.sh >"$dir/services.env"
    su postgres -c "psql -qAtc 'DROP DATABASE IF EXISTS $database WITH (FORCE)'" >&2
    su postgres -c "psql -qAtc 'CREATE DATABASE $database OWNER duovarsity'" >&2
    config
    (shared_env; "$binary" migrate >/dev/null)
    (shared_env; export DUOVARSITY_DATA_DIR="$dir/data/seed"; "$binary" seed --demo --learners "${LEARNERS:-200}" 2>/dev/null) >&2
    # The first user replica makes the signing key the others then read.
    start_one user-1
    for name in $(names all); do
      [ "$name" = user-1 ] && continue
      start_one "$name"
    done
    log "up: $(names all | wc -l) processes; gateways $("$0" urls)"
    ;;
  urls)
    config
    list=""
    for r in $(seq 1 "$gateways"); do list+="${list:+,}http://127.0.0.1:$((18100 + r))"; done
    echo "$list"
    ;;
  names) names "${2:-all}" ;;
  status)
    printf '%-16s %-8s %-7s %s\n' process pid state rss_mib
    for name in $(names all); do
      pid=$(pid_of "$name")
      if alive "$name"; then
        rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
        printf '%-16s %-8s %-7s %s\n' "$name" "$pid" up "$rss"
      else
        printf '%-16s %-8s %-7s %s\n' "$name" "${pid:--}" down -
      fi
    done
    ;;
  restart) stop_one "$2" TERM; start_one "$2" ;;
  kill) stop_one "$2" KILL ;;
  start) alive "$2" || start_one "$2" ;;
  down)
    for name in $(names all 2>/dev/null); do stop_one "$name" TERM; done
    ;;
  *)
    sed -n '2,20p' "$0" >&2
    exit 2
    ;;
esac
