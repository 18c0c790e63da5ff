#!/usr/bin/env bash
# Payment benchmark on the embedded platform: a release `duovarsity up` with its Razorpay
# sandbox, on a throwaway data directory, on 127.0.0.1.
#   1. checkouts per second (each: two course-service calls, an order insert, a sandbox
#      order over HTTP) against a baseline measured in the same run with as many calls:
#      free enrollments (one course-service write with its outbox event);
#   2. webhook applications per second: signed `payment.captured` webhooks for those
#      orders, each applied once (ledger posting, payment.captured through the saga);
#   3. the exactly-once check: 100 concurrent checkouts with one Idempotency-Key, and one
#      webhook delivered 100 times at once.
# Bounded by counts: COURSES x LEARNERS checkouts (default 10 x 60), CONCURRENCY clients.
set -euo pipefail
cd "$(dirname "$0")/.."

export DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL=bench-admin@example.com
export DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD=correct-horse-battery
source scripts/bench-platform.sh
start_platform "${BENCH_HTTP_PORT:-18082}" "${BENCH_GRPC_PORT:-15053}"

python3 - "$base" "$data/razorpay-webhook-secret" <<'PY'
import concurrent.futures as cf, hashlib, hmac, http.client, json, os, sys, threading, time, urllib.parse

base, secret_file = sys.argv[1], sys.argv[2]
courses_n = int(os.environ.get("COURSES", "10"))
learners_n = int(os.environ.get("LEARNERS", "60"))
concurrency = int(os.environ.get("CONCURRENCY", "16"))
host = urllib.parse.urlparse(base).netloc
local = threading.local()

def call(method, path, body=None, token=None, headers=None):
    if not hasattr(local, "conn"):
        local.conn = http.client.HTTPConnection(host, timeout=30)
    h = {"content-type": "application/json"}
    if token:
        h["authorization"] = "Bearer " + token
    h.update(headers or {})
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    started = time.perf_counter()
    local.conn.request(method, path, body=data, headers=h)
    response = local.conn.getresponse()
    text = response.read()
    elapsed = time.perf_counter() - started
    return response.status, (json.loads(text) if text else None), elapsed

def ok(status, answer, what):
    if status != 200:
        sys.exit(f"bench: {what}: {status} {answer}")
    return answer

def login(email):
    return ok(*call("POST", "/v1/auth/login", {"email": email, "password": "correct-horse-battery"})[:2], "login")["accessToken"]

def run(name, jobs):
    """Runs jobs (callables returning (status, answer, seconds)) on CONCURRENCY threads."""
    latencies, started = [], time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        for status, answer, elapsed in pool.map(lambda job: job(), jobs):
            ok(status, answer, name)
            latencies.append(elapsed)
    wall = time.perf_counter() - started
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
    rate = len(latencies) / wall
    print(f"{name:<34} {len(latencies):>5} in {wall:5.2f}s  {rate:7.1f}/s  p50 {pct(0.5):6.1f} ms  p99 {pct(0.99):6.1f} ms")
    return rate

admin = login("bench-admin@example.com")
paid, free = [], []
for n in range(2 * courses_n):
    slug = f"bench-{n}"
    course = ok(*call("POST", "/v1/courses", {"slug": slug, "title": slug, "level": "LEVEL_BEGINNER", "language": "en"}, admin)[:2], "course")
    section = ok(*call("POST", f"/v1/courses/{course['id']}/sections", {"title": "S"}, admin)[:2], "section")
    ok(*call("POST", f"/v1/sections/{section['id']}/lessons", {"title": "L", "kind": "LESSON_KIND_TEXT"}, admin)[:2], "lesson")
    if n < courses_n:
        ok(*call("PATCH", f"/v1/courses/{course['id']}", {"price": {"currency": "USD", "amountMinor": 4900}}, admin)[:2], "price")
        paid.append(course["id"])
    else:
        free.append(course["id"])
    ok(*call("POST", f"/v1/courses/{course['id']}:publish", {}, admin)[:2], "publish")

def new_learner(n):
    email = f"bench-learner-{n}@example.com"
    call("POST", "/v1/auth/register", {"email": email, "password": "correct-horse-battery", "displayName": email})
    return login(email)
with cf.ThreadPoolExecutor(4) as pool:
    learners = list(pool.map(new_learner, range(learners_n + 1)))
print(f"== {learners_n} learners, {courses_n} paid courses (USD 49.00) and {courses_n} free ones, {concurrency} concurrent clients")

# Pending enrollments (not measured), then the baseline and the checkouts side by side.
with cf.ThreadPoolExecutor(concurrency) as pool:
    list(pool.map(lambda lc: ok(*call("POST", f"/v1/courses/{lc[1]}/enrollments", {}, lc[0])[:2], "enroll"),
                  [(t, c) for t in learners[:-1] for c in paid]))
baseline = run("baseline: free enrollment", [lambda t=t, c=c: call("POST", f"/v1/courses/{c}/enrollments", {}, t) for t in learners[:-1] for c in free])
orders = []
def checkout(token, course):
    status, answer, elapsed = call("POST", f"/v1/courses/{course}/checkout", {}, token)
    if status == 200:
        orders.append(answer)
    return status, answer, elapsed
rate = run("checkout (sandbox order over HTTP)", [lambda t=t, c=c: checkout(t, c) for t in learners[:-1] for c in paid])
print(f"   checkout / baseline throughput: {rate / baseline:.2f}x")

secret = open(secret_file).read().strip().encode()
def webhook(order, event_id=None):
    body = json.dumps({"entity": "event", "event": "payment.captured", "contains": ["payment"],
        "payload": {"payment": {"entity": {"id": "pay_" + order["id"][-14:], "entity": "payment",
            "amount": 4900, "currency": "USD", "status": "captured", "order_id": order["providerOrderId"],
            "fee": 98, "captured": True}}}}).encode()
    signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
    headers = {"x-razorpay-signature": signature, "x-razorpay-event-id": event_id or "evt_" + order["id"]}
    return lambda: call("POST", "/v1/payments/webhooks/razorpay", body, None, headers)
run("webhook applied (payment.captured)", [webhook(o) for o in orders[1:]])

# Exactly once: one key, 100 concurrent checkouts; one webhook, 100 concurrent deliveries.
last = learners[-1]
ok(*call("POST", f"/v1/courses/{paid[0]}/enrollments", {}, last)[:2], "enroll")
with cf.ThreadPoolExecutor(100) as pool:
    answers = list(pool.map(lambda _: call("POST", f"/v1/courses/{paid[0]}/checkout", {}, last, {"idempotency-key": "bench-once"}), range(100)))
ids = {a[1]["id"] for a in answers if a[0] == 200}
print(f"== 100 concurrent checkouts, one Idempotency-Key: {sum(a[0] == 200 for a in answers)} answered 200, {len(ids)} distinct order(s)")
order = answers[0][1]
deliver = webhook(order, "evt_bench_duplicate")
with cf.ThreadPoolExecutor(100) as pool:
    outcomes = [a[1]["outcome"] for a in pool.map(lambda _: deliver(), range(100)) if a[0] == 200]
print(f"== one webhook delivered 100 times at once: " + ", ".join(f"{o}={outcomes.count(o)}" for o in sorted(set(outcomes))))
summary = ok(*call("GET", "/v1/payments/ledger", None, admin)[:2], "ledger")
receipts = ok(*call("GET", "/v1/me/receipts", None, last)[:2], "receipts")["receipts"]
print(f"== ledger imbalance: {[m['amountMinor'] for m in summary['imbalance']]}; receipts of that learner: {len(receipts)}")
PY
