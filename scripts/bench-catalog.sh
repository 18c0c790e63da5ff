#!/usr/bin/env bash
# Read benchmark of the learning domain through the gateway: a release `duovarsity up` on
# the demo catalog, and wrk sending GET /v1/courses/{id} and GET /v1/lessons/{id}/content
# with Zipf-distributed popularity (exponent ZIPF_S, default 1.1) over every course and
# lesson. Reports throughput, latency percentiles and the cache hit rate from /metrics.
# Bounded: DURATION seconds (default 20), on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-20}
connections=${CONNECTIONS:-64}
zipf_s=${ZIPF_S:-1.1}

command -v wrk >/dev/null || { echo "bench: installing wrk" >&2; apt-get install -y -qq wrk >&2; }
source scripts/bench-platform.sh
start_platform "${BENCH_HTTP_PORT:-18081}" "${BENCH_GRPC_PORT:-15052}" --seed

# Every course and lesson path, then a Zipf CDF over them in a wrk script.
python3 - "$base" "$zipf_s" "$work/zipf.lua" <<'PY'
import json, random, sys, urllib.request
base, s, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
courses = json.load(urllib.request.urlopen(base + "/v1/courses?pageSize=100"))["courses"]
paths = []
for course in courses:
    paths.append("/v1/courses/" + course["id"])
    outline = json.load(urllib.request.urlopen(base + "/v1/courses/" + course["id"]))
    for section in outline["sections"]:
        for lesson in section["lessons"]:
            paths.append("/v1/lessons/" + lesson["id"] + "/content")
random.Random(7).shuffle(paths)  # popularity rank is independent of kind
weights = [1 / (rank ** s) for rank in range(1, len(paths) + 1)]
total, acc, cdf = sum(weights), 0.0, []
for w in weights:
    acc += w / total
    cdf.append(acc)
with open(out, "w") as f:
    f.write("local paths = {" + ",".join('"%s"' % p for p in paths) + "}\n")
    f.write("local cdf = {" + ",".join("%.8f" % c for c in cdf) + "}\n")
    f.write("""
math.randomseed(os.time())
request = function()
  local r = math.random()
  local lo, hi = 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < r then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", paths[lo])
end
""")
print(f"{len(paths)} paths ({len(courses)} courses), Zipf s={s}; the top 10 take {cdf[9]:.0%} of requests", file=sys.stderr)
PY

cache_counts() {
  curl -s "$admin/metrics" | awk '/^cache_requests_total/ {
      hit = ($0 ~ /result="hit"/); split($0, parts, " "); n = parts[2]
      if (hit) h += n; else m += n } END { printf "%d %d\n", h, m }'
}
read -r hits_before misses_before < <(cache_counts)
echo "== Zipf reads of course outlines and lesson content, $connections connections, ${duration}s"
wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$work/zipf.lua" "$base"
read -r hits_after misses_after < <(cache_counts)
hits=$((hits_after - hits_before)); misses=$((misses_after - misses_before))
python3 -c "import sys; h,m=$hits,$misses; print(f'== cache (L1, in-process): {h} hits, {m} misses, hit rate {h/max(h+m,1):.2%}')"
