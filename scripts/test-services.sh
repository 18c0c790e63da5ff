#!/usr/bin/env bash
# Starts what the test suite talks to, idempotently, and prints the environment for it.
#   eval "$(scripts/test-services.sh)"
# - PostgreSQL (the distro's cluster), with a `duovarsity` login role for the tests.
# - Redis on 127.0.0.1:6379 (the L2 cache and cache invalidation tests).
# - moto, an S3-compatible server, on 127.0.0.1:5055 (the media store on S3).
# - aiosmtpd, an SMTP server, on 127.0.0.1:2525, delivering into a maildir (email tests).
# - tansu, an Apache-Kafka-compatible broker, on 127.0.0.1:9092 with in-memory storage
#   (the Kafka bus contract and the distributed end-to-end run). The first install builds
#   it from crates.io (about 10 minutes); later runs reuse ~/.cargo/bin/tansu.
# Everything goes to stderr except the final `export` lines.
set -euo pipefail

log() { echo "test-services: $*" >&2; }

pg_user=duovarsity
pg_password=duovarsity
pg_port=5432

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  log "installing PostgreSQL"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi

version=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
if [ -z "$version" ]; then
  log "no PostgreSQL cluster found under /etc/postgresql"
  exit 1
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online" {found=1} END {exit !found}'; then
  log "starting PostgreSQL $version"
  pg_ctlcluster "$version" main start >&2
fi
for _ in $(seq 1 50); do
  if su postgres -c "psql -p $pg_port -qAtc 'select 1'" >/dev/null 2>&1; then break; fi
  sleep 0.2
done

su postgres -c "psql -p $pg_port -qAt" >&2 <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$pg_user') THEN
    CREATE ROLE $pg_user LOGIN CREATEDB PASSWORD '$pg_password';
  END IF;
END
\$\$;
SQL

# Drop databases left behind by test runs that were killed.
leftovers=$(su postgres -c "psql -p $pg_port -qAtc \"select datname from pg_database where datname like 'dv_test_%'\"")
for db in $leftovers; do
  su postgres -c "psql -p $pg_port -qAtc 'DROP DATABASE IF EXISTS $db WITH (FORCE)'" >&2 || true
done

redis_port=6379
if ! command -v redis-server >/dev/null 2>&1; then
  log "installing Redis"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq redis-server >&2
fi
if ! redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
  log "starting Redis"
  redis-server --daemonize yes --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >&2
  for _ in $(seq 1 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

# An S3-compatible server for the media store test (moto, from PyPI).
s3_port=5055
if ! command -v moto_server >/dev/null 2>&1; then
  log "installing moto (S3-compatible test server)"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]' >&2
  hash -r
fi
if ! curl -s -o /dev/null "http://127.0.0.1:$s3_port/" 2>/dev/null; then
  log "starting moto on 127.0.0.1:$s3_port"
  nohup moto_server -H 127.0.0.1 -p "$s3_port" >/tmp/duovarsity-moto.log 2>&1 &
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$s3_port/" 2>/dev/null && break
    sleep 0.1
  done
fi

# An SMTP server that stores what it receives in a maildir (aiosmtpd, from PyPI).
smtp_port=2525
maildir=/tmp/duovarsity-test-maildir
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  log "installing aiosmtpd (SMTP test server)"
  python3 -m pip install --quiet --disable-pip-version-check aiosmtpd >&2
fi
mkdir -p "$maildir/tmp" "$maildir/new" "$maildir/cur"
if ! (exec 3<>"/dev/tcp/127.0.0.1/$smtp_port") 2>/dev/null; then
  log "starting aiosmtpd on 127.0.0.1:$smtp_port"
  nohup python3 -m aiosmtpd -n -l "127.0.0.1:$smtp_port" -c aiosmtpd.handlers.Mailbox "$maildir" >/tmp/duovarsity-smtp.log 2>&1 &
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$smtp_port") 2>/dev/null && break
    sleep 0.1
  done
fi

# A Kafka-protocol broker (tansu, from crates.io).
kafka_port=9092
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tansu >/dev/null 2>&1; then
  log "installing tansu (Kafka-compatible broker; builds once, about 10 minutes)"
  env -u CARGO_TARGET_DIR cargo install tansu --locked --features dynostore --quiet >&2
fi
if ! (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null; then
  log "starting tansu on 127.0.0.1:$kafka_port"
  nohup tansu broker --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine memory://tansu/ >/tmp/duovarsity-tansu.log 2>&1 &
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null && break
    sleep 0.1
  done
fi

echo "export DUOVARSITY_TEST_KAFKA_BROKERS=127.0.0.1:$kafka_port"
echo "export DUOVARSITY_TEST_TANSU=$(command -v tansu)"
echo "export DUOVARSITY_TEST_SMTP_URL=smtp://127.0.0.1:$smtp_port"
echo "export DUOVARSITY_TEST_SMTP_MAILDIR=$maildir"
echo "export DUOVARSITY_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port"
echo "export DUOVARSITY_TEST_POSTGRES_URL=postgres://$pg_user:$pg_password@127.0.0.1:$pg_port/postgres"
echo "export DUOVARSITY_TEST_REDIS_URL=redis://127.0.0.1:$redis_port"
