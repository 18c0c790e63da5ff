#!/usr/bin/env bash
# The discovery service's goals (issue 25), on a generated catalog of COURSES courses
# (default 10000) of ten lessons each (`duovarsity seed --courses`):
#   1. ingest: `duovarsity up` over the seeded outboxes until every course and lesson is
#      searchable; then a restarted replica's index build (time, size; from /metrics);
#   2. search latency at RATE queries/s (default 500) for DURATION s (default 15) per run:
#      discovery's Search over gRPC (in the service), GET /v1/search through the gateway,
#      and today's catalog filter GET /v1/courses?query= through the gateway, on the same
#      data in the same run (crates/load/src/bin/search_bench.rs), for queries made of real
#      titles as they are typed (prefixes, one in five with a typo);
#   3. publish to searchable: a new course is published and searched for until found.
# 127.0.0.1 only; bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

courses=${COURSES:-10000}
rate=${RATE:-500}
duration=${DURATION:-15}
target=${CARGO_TARGET_DIR:-target}
http_port=${BENCH_HTTP_PORT:-18097}
grpc_port=${BENCH_GRPC_PORT:-15097}
source scripts/bench-platform.sh
echo "== seeding $courses courses (ten lessons each)"
began=$(date +%s.%N)
SEED_ARGS="--courses $courses" start_platform "$http_port" "$grpc_port"
documents=$((courses * 11))
echo "== ingest: waiting until all $documents documents are searchable"
up=$(date +%s.%N)
for _ in $(seq 1 3000); do
  found=$(curl -sf "$base/v1/search?q=&pageSize=1" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("total", 0))' || echo 0)
  [ "$found" = "$documents" ] && break
  sleep 0.2
done
python3 -c "print(f'ingest: {$found} documents searchable {$(date +%s.%N) - $up:.1f} s after the platform started ({$(date +%s.%N) - $began:.0f} s with seeding)')"
[ "$found" = "$documents" ] || { echo "bench: only $found of $documents documents became searchable" >&2; exit 1; }

echo "== a restarted replica builds its index from the database"
kill "$server"; wait "$server" 2>/dev/null || true
restarted=$(date +%s.%N)
RUST_LOG=warn "$binary" up >"$work/server.log" 2>&1 &
server=$!
# Search answers 503 until this replica's index is built.
for _ in $(seq 1 1200); do
  [ "$(curl -s "$base/v1/search?q=&pageSize=1" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("total", 0))' 2>/dev/null)" = "$documents" ] && break
  sleep 0.05
done
python3 -c "print(f'searchable again {$(date +%s.%N) - $restarted:.1f} s after the restart')"
curl -sf "$admin/metrics" | awk '/^discovery_index_(build_seconds|bytes|documents) / {print}'
# The other consumers may still be working through the seeded events: measure on a
# quiet platform (CPU under 5 % for two seconds, at most 5 minutes).
for _ in $(seq 1 150); do
  a=$(awk '{print $14 + $15}' "/proc/$server/stat"); sleep 2; b=$(awk '{print $14 + $15}' "/proc/$server/stat")
  [ $((b - a)) -lt 10 ] && break
done

echo "== queries from real titles, as typed"
python3 - "$base" "$work/queries.txt" <<'PY'
import json, random, sys, urllib.request
base, out = sys.argv[1], sys.argv[2]
rng = random.Random(25)
titles, token = [], ""
while len(titles) < 1000:
    page = json.load(urllib.request.urlopen(f"{base}/v1/courses?pageSize=100&pageToken={token}"))
    titles += [c["title"] for c in page["courses"]]
    token = page.get("nextPageToken", "")
    if not token:
        break
def typo(word):
    if len(word) < 5:
        return word
    i = rng.randrange(1, len(word) - 1)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]
queries = []
for title in titles:
    words = [w.lower() for w in title.split() if w.isalpha()]
    take = words[: rng.randint(1, min(3, len(words)))]
    if rng.random() < 0.2:
        take = [typo(w) for w in take]
    last = take[-1]
    take[-1] = last[: rng.randint(min(3, len(last)), len(last))]
    queries.append(" ".join(take))
open(out, "w").write("\n".join(queries) + "\n")
print(f"{len(queries)} queries, for example: {queries[:5]}")
PY
"$target/release/search_bench" --base "$base" --grpc "http://127.0.0.1:$grpc_port" \
  --queries "$work/queries.txt" --rate "$rate" --seconds "$duration" --rounds 2 --admin "$admin"

echo "== publish to searchable"
python3 - "$base" <<'PY'
import json, sys, time, urllib.request
base = sys.argv[1]
def call(method, path, body=None, token=None):
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(request) as answer:
        return json.loads(answer.read() or b"{}")
token = call("POST", "/v1/auth/login", {"email": "instructor-0@load.duovarsity.test", "password": "load-test-password-2026"})["accessToken"]
took = []
for n in range(5):
    word = f"zyxomatic{n}q"
    course = call("POST", "/v1/courses", {"slug": f"fresh-{n}-{int(time.time())}", "title": f"Fresh {word} course", "level": "LEVEL_BEGINNER", "language": "en"}, token)
    section = call("POST", f"/v1/courses/{course['id']}/sections", {"title": "S"}, token)
    lesson = call("POST", f"/v1/sections/{section['id']}/lessons", {"title": "L", "kind": "LESSON_KIND_TEXT", "required": True}, token)
    call("PUT", f"/v1/lessons/{lesson['id']}/draft", {"markdown": "text"}, token)
    call("POST", f"/v1/lessons/{lesson['id']}/content:publish", {}, token)
    started = time.monotonic()
    call("POST", f"/v1/courses/{course['id']}:publish", {}, token)
    while json.load(urllib.request.urlopen(f"{base}/v1/search?q={word}"))["total"] in ("0", 0):
        if time.monotonic() - started > 10:
            sys.exit(f"{word} not searchable within 10 s")
        time.sleep(0.005)
    took.append((time.monotonic() - started) * 1000)
took.sort()
print("publish to searchable (ms, from the publish call to the first search that finds it):", ", ".join(f"{t:.0f}" for t in took), f"; median {took[2]:.0f}")
PY
