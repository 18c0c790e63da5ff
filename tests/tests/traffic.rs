//! The gateway's traffic rules: rate limits exact across gateways that share Redis, a
//! local share when Redis is gone, a policy file reloaded at run time, and limits by the
//! tier a token carries (an admin can throttle a learner); and connection hygiene at the
//! edge (slow headers cut off, a cap on connections).

use std::time::Duration;

use duovarsity::Component;
use duovarsity_testkit::llm::{MockLlm, one_model_catalog};
use duovarsity_testkit::{PrivateRedis, TestPlatform};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A client address of this run's own (through a trusted proxy): runs and tests share
/// nothing in Redis.
fn fresh_address() -> String {
    let id = uuid::Uuid::now_v7().as_u128();
    format!("10.{}.{}.{}", (id >> 16) as u8, (id >> 8) as u8, id as u8)
}

fn header_of(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

struct Answer {
    status: StatusCode,
    policy: String,
    state: String,
    retry_after: Option<String>,
    body: Value,
}

async fn get(gateway: &TestPlatform, path: &str, address: &str, token: Option<&str>) -> Answer {
    let mut request = gateway
        .client
        .get(gateway.url(path))
        .header("x-forwarded-for", address);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| header_of(&response, name);
    Answer {
        status: response.status(),
        policy: header("ratelimit-policy").unwrap_or_default(),
        state: header("ratelimit").unwrap_or_default(),
        retry_after: header("retry-after"),
        body: response.json().await.unwrap_or(Value::Null),
    }
}

/// `count` anonymous GETs of the JWKS at once, alternating between `gateways`.
async fn burst(gateways: &[&TestPlatform], count: usize, address: &str) -> Vec<Answer> {
    futures::future::join_all((0..count).map(|n| {
        get(
            gateways[n % gateways.len()],
            "/.well-known/jwks.json",
            address,
            None,
        )
    }))
    .await
}

fn tally(answers: &[Answer]) -> (usize, usize, usize) {
    let ok = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    let limited = answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    (ok, limited, answers.len() - ok - limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_admit_exactly_the_limit_and_fall_back_without_redis() {
    let mut redis = PrivateRedis::start();
    let redis_url = redis.url();
    let user = TestPlatform::start_with(Component::Service("user"), &[]).await;
    let user_url = format!("http://{}", user.grpc_addr());
    let gateway = || {
        let settings = [
            ("DUOVARSITY_USER_SERVICE_URL", user_url.as_str()),
            ("DUOVARSITY_REDIS_URL", redis_url.as_str()),
            ("DUOVARSITY_RATE_LIMITS_ENABLED", "true"),
            ("DUOVARSITY_RATE_LIMIT_ANONYMOUS", "50/m"),
            ("DUOVARSITY_TRUSTED_PROXIES", "127.0.0.1"),
            ("DUOVARSITY_GATEWAY_REPLICAS", "2"),
        ];
        async move { TestPlatform::start_with(Component::Gateway, &settings).await }
    };
    let (a, b) = (gateway().await, gateway().await);

    // 80 quick calls over both gateways: exactly 50 pass.
    let answers = burst(&[&a, &b], 80, &fresh_address()).await;
    assert_eq!(tally(&answers), (50, 30, 0));
    for answer in &answers {
        assert_eq!(answer.policy, "\"anonymous\";q=50;w=60");
        assert!(
            answer.state.starts_with("\"anonymous\";r="),
            "{}",
            answer.state
        );
    }
    let refused = answers
        .iter()
        .find(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .unwrap();
    assert!(
        refused.state.starts_with("\"anonymous\";r=0;t="),
        "{}",
        refused.state
    );
    let wait: u64 = refused.retry_after.as_deref().unwrap().parse().unwrap();
    assert!(
        (1..=2).contains(&wait),
        "one request frees up every 1.2 s: {wait}"
    );
    assert_eq!(refused.body["reason"], "RATE_LIMITED", "{}", refused.body);
    assert_eq!(refused.body["status"], 429);
    // Another client has its own allowance.
    assert_eq!(tally(&burst(&[&a], 3, &fresh_address()).await), (3, 0, 0));

    // Redis stopped: no 5xx; each gateway enforces half of the limit on its own.
    redis.stop();
    let address = fresh_address();
    let answers = burst(&[&a, &b], 40, &address).await;
    assert_eq!(
        tally(&answers),
        (40, 0, 0),
        "20 per gateway, within its share of 25"
    );
    let answers = burst(&[&a], 10, &address).await;
    let (ok, limited, failed) = tally(&answers);
    // Gateway A spent 20 of its share of 25 (one more may have refilled meanwhile).
    assert!(
        (5..=6).contains(&ok) && ok + limited == 10 && failed == 0,
        "{ok} {limited} {failed}"
    );
    assert!(a.metrics().await.contains("rate_limit_fallback_total"));

    // Redis back: the shared count resumes.
    redis.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let address = fresh_address();
    let mut answers = burst(&[&a, &b], 60, &address).await;
    for _ in 0..20 {
        if tally(&answers).0 <= 50 {
            break;
        }
        // The link retries Redis a second after the failure; until then, local shares.
        tokio::time::sleep(Duration::from_millis(500)).await;
        answers = burst(&[&a, &b], 60, &fresh_address()).await;
    }
    assert_eq!(tally(&answers), (50, 10, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_file_reloads_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rate-limits.toml");
    let policy = |anonymous: &str| {
        include_str!("../../gateway/rate-limits.toml").replacen(
            "anonymous = \"120/m\"",
            &format!("anonymous = \"{anonymous}\""),
            1,
        )
    };
    std::fs::write(&file, policy("3/m")).unwrap();
    let file_setting = file.display().to_string();
    let p = TestPlatform::start_with_admin(
        Component::All,
        &[
            ("DUOVARSITY_RATE_LIMITS_ENABLED", "true"),
            ("DUOVARSITY_RATE_LIMITS_FILE", file_setting.as_str()),
            ("DUOVARSITY_TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    )
    .await;
    let address = fresh_address();
    assert_eq!(tally(&burst(&[&p], 4, &address).await), (3, 1, 0));

    std::fs::write(&file, policy("100/m")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get(&p, "/.well-known/jwks.json", &fresh_address(), None).await;
        if answer.policy == "\"anonymous\";q=100;w=60" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reloaded: {}",
            answer.policy
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A broken file is refused and counted; the running policy stays.
    std::fs::write(&file, "anonymous = \"lots\"\n").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !p
        .metrics()
        .await
        .contains("rate_limit_reloads_total{outcome=\"refused\"}")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bad file was not seen"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = get(&p, "/.well-known/jwks.json", &fresh_address(), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.policy, "\"anonymous\";q=100;w=60");

    // Both reloads are in the audit trail, with the checksum of the file applied.
    let (_, admin) = p.sign_in(duovarsity_testkit::TEST_ADMIN).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let changes = loop {
        let (_, body) = p
            .call(
                reqwest::Method::GET,
                "/v1/admin/changes?subject=settings/rate-limits",
                Some(&admin),
                None,
            )
            .await;
        let changes = body["changes"].as_array().cloned().unwrap_or_default();
        if changes.len() == 2 {
            break changes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not recorded: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(changes[0]["definition"]["applied"], false, "{changes:?}");
    assert_eq!(changes[1]["definition"]["applied"], true, "{changes:?}");
    assert_eq!(
        changes[1]["checksum"],
        duovarsity_common::digest::sha256_hex(policy("100/m").as_bytes())
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_callers_are_limited_by_tier_and_an_admin_can_throttle_one() {
    let p = TestPlatform::start_with_admin(
        Component::All,
        &[
            ("DUOVARSITY_RATE_LIMITS_ENABLED", "true"),
            ("DUOVARSITY_RATE_LIMIT_FREE_READS", "5/m"),
            ("DUOVARSITY_RATE_LIMIT_THROTTLED_READS", "2/m"),
        ],
    )
    .await;
    let (id, token) = p.sign_up("limited@example.com").await;
    let address = fresh_address();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let answer = get(&p, "/v1/users/me", &address, Some(&token)).await;
        assert_eq!(answer.policy, "\"free.reads\";q=5;w=60");
        statuses.push(answer.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS);
    // Another learner is counted apart, even from the same address.
    let (_, other) = p.sign_up("other@example.com").await;
    assert_eq!(
        get(&p, "/v1/users/me", &address, Some(&other)).await.status,
        StatusCode::OK
    );

    let user = p.set_tier(&id, "TIER_THROTTLED").await;
    assert_eq!(user["tier"], "TIER_THROTTLED");
    // The next token carries the tier.
    let (_, throttled) = p.sign_in("limited@example.com").await;
    let answer = get(&p, "/v1/users/me", &address, Some(&throttled)).await;
    assert_eq!(answer.policy, "\"throttled.reads\";q=2;w=60");
    p.stop().await;
}

/// Partial request headers (Slowloris) are cut off after the header timeout while normal
/// traffic is served, and connections past the cap are closed at once and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_connections_past_the_cap_are_refused() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let p = TestPlatform::start_with(
        Component::All,
        &[
            ("DUOVARSITY_HEADER_READ_TIMEOUT_MS", "1000"),
            ("DUOVARSITY_MAX_CONNECTIONS", "60"),
        ],
    )
    .await;
    let addr = p.url("").trim_start_matches("http://").to_string();
    // A connection per call: the server closes idle keep-alive connections after the
    // same second, and a pooled one could be reused just as it closes.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let get = |path: &str| client.get(p.url(path)).send();
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /v1/courses HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Served meanwhile (20 connections of the cap remain).
    let answer = get("/healthz").await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);

    // Past the cap: 30 more connections, of which 20 fit and the rest are closed at once.
    let mut extra = Vec::new();
    for _ in 0..30 {
        extra.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let started = tokio::time::Instant::now();
    // Every slow connection is closed by the server within the timeout (plus slack).
    for stream in &mut slow {
        let mut byte = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("the server closes a connection whose headers never end");
        // Closed (0 bytes), reset, or a 408 before closing.
        if let Ok(n) = read {
            assert!(n == 0 || String::from_utf8_lossy(&byte[..n]).starts_with("HTTP/1.1 408"));
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let metrics = p.metrics().await;
    assert!(metrics.contains("http_connections_refused_total"));
    // Freed: normal calls go on.
    let answer = get("/healthz").await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    drop(extra);
    p.stop().await;
}

/// Operations surfaces are not public: the public listener answers 404 for `/metrics` and
/// `/status` (which lists upstream pod addresses), and the admin listener serves them.
#[tokio::test]
async fn metrics_and_status_are_served_only_on_the_admin_listener() {
    let p = TestPlatform::start().await;
    for path in ["/metrics", "/status"] {
        let response = p.client.get(p.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert!(p.metrics().await.contains("# TYPE"));
    let (status, report) = p.admin("/status").await;
    assert_eq!(status, StatusCode::OK);
    assert!(report["upstreams"].is_object(), "{report}");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(p.admin(path).await.0, StatusCode::OK, "{path}");
    }
    assert_ne!(p.admin_url(""), p.url(""));
    p.stop().await;
}

/// Sends raw `bytes` on a new connection and reads what comes back within `wait` (until
/// the server closes): the text, and whether the server closed the connection.
async fn raw_exchange(addr: &str, bytes: &[u8], wait: Duration) -> (String, bool) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

/// Bodies at the edge: a webhook that declares a body over the JSON limit is refused
/// before a byte of it is read, a body that trickles is cut off with 408 after
/// `DUOVARSITY_BODY_READ_TIMEOUT_MS` (counted), a flood of unsigned webhook posts from one
/// address meets 429 (`webhook` class), and IPv6 clients are counted per /64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_bounded_in_size_and_time_and_webhooks_and_ipv6_networks_are_limited() {
    let p = TestPlatform::start_with(
        Component::All,
        &[
            ("DUOVARSITY_RATE_LIMITS_ENABLED", "true"),
            ("DUOVARSITY_BODY_READ_TIMEOUT_MS", "500"),
            ("DUOVARSITY_RATE_LIMIT_WEBHOOK", "20/m"),
            ("DUOVARSITY_RATE_LIMIT_ANONYMOUS", "5/m"),
            ("DUOVARSITY_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    let addr = p.url("").trim_start_matches("http://").to_string();
    let webhook = "/v1/payments/webhooks/razorpay";

    // Declared 2 MB: answered at once, the body never sent.
    let started = std::time::Instant::now();
    let head = format!(
        "POST {webhook} HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n\
         X-Forwarded-For: {}\r\nContent-Length: 2000000\r\n\r\n",
        fresh_address()
    );
    let (answer, _) = raw_exchange(&addr, head.as_bytes(), Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Ten bytes of a declared hundred, then nothing: 408 and the connection closed.
    let started = std::time::Instant::now();
    let stalled = format!(
        "POST {webhook} HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n\
         X-Forwarded-For: {}\r\nContent-Length: 100\r\n\r\n{{\"a\": 12",
        fresh_address()
    );
    let (answer, closed) = raw_exchange(&addr, stalled.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("BODY_READ_TIMEOUT"), "{answer}");
    assert!(closed, "the connection of a stalled body is closed");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    let metrics = p.metrics().await;
    assert!(
        metrics.contains("http_read_timeouts_total{phase=\"body\"}"),
        "the body timeout is counted"
    );

    // Unsigned posts from one address: the first 20 reach the service, the rest are 429.
    let flooder = fresh_address();
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let response = p
            .client
            .post(p.url(webhook))
            .header("x-forwarded-for", &flooder)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(limited, 10, "{statuses:?}");
    assert!(
        statuses[..20]
            .iter()
            .all(|s| *s != StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );

    // IPv6: every address of one /64 shares the anonymous limit; another /64 does not.
    let network = (uuid::Uuid::now_v7().as_u128() & 0xffff) as u16;
    let mut answers = Vec::new();
    for host in 1..=6 {
        let address = format!("2001:db8:{network:x}:1::{host:x}");
        answers.push(
            get(&p, "/.well-known/jwks.json", &address, None)
                .await
                .status,
        );
    }
    assert_eq!(answers[..5], [StatusCode::OK; 5], "{answers:?}");
    assert_eq!(answers[5], StatusCode::TOO_MANY_REQUESTS, "{answers:?}");
    let neighbour = format!("2001:db8:{network:x}:2::1");
    assert_eq!(
        get(&p, "/.well-known/jwks.json", &neighbour, None)
            .await
            .status,
        StatusCode::OK
    );
    p.stop().await;
}

/// The platform (with the bootstrap admin and `settings`) on an AI provider that answers
/// after `latency`, its one model named `model`.
async fn slow_ai_platform(
    model: &str,
    latency: Duration,
    settings: &[(&str, &str)],
) -> (TestPlatform, MockLlm, tempfile::TempDir) {
    let mock = MockLlm::openai().await;
    mock.set_latency(latency);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, &mock.key).unwrap();
    let file = dir.path().join("catalog.toml");
    std::fs::write(
        &file,
        one_model_catalog(&mock, &key_file, model, 1.0, 10, 10.0),
    )
    .unwrap();
    let file = file.display().to_string();
    let mut all = vec![("DUOVARSITY_AI_CATALOG_FILE", file.as_str())];
    all.extend_from_slice(settings);
    let p = TestPlatform::start_with_admin(Component::All, &all).await;
    (p, mock, dir)
}

/// A method's own deadline (`DUOVARSITY_ROUTE_TIMEOUTS`) goes upstream as `grpc-timeout`;
/// past it the caller gets 504 problem+json, and other routes keep the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_deadline_exceeded_is_a_504_problem() {
    let (p, _mock, _dir) = slow_ai_platform(
        "slow",
        Duration::from_secs(3),
        &[(
            "DUOVARSITY_ROUTE_TIMEOUTS",
            "duovarsity.ai.v1.AiRoutingService=300,duovarsity.user.v1.UserService/GetJwks=5000",
        )],
    )
    .await;
    let (_, token) = p.sign_up("deadline@example.com").await;
    let started = std::time::Instant::now();
    let (status, body) = p
        .call(
            Method::POST,
            "/v1/ai/chat/completions",
            Some(&token),
            Some(json!({"model": "slow", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["code"], "DEADLINE_EXCEEDED", "{body}");
    assert_eq!(body["status"], 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let (status, _) = p
        .call(Method::GET, "/v1/users/me", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    p.stop().await;
}

/// Under overload lower tiers are shed first: with at most 4 calls in flight to the AI
/// service, free learners get 3 of them and the fourth is refused (503, Retry-After),
/// while a premium learner is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_upstream_sheds_free_traffic_before_premium() {
    let (p, _mock, _dir) = slow_ai_platform(
        "busy",
        Duration::from_millis(2500),
        &[("DUOVARSITY_UPSTREAM_MAX_IN_FLIGHT", "4")],
    )
    .await;
    let (_, free) = p.sign_up("free@example.com").await;
    let (premium_id, _) = p.sign_up("premium@example.com").await;
    p.set_tier(&premium_id, "TIER_PREMIUM").await;
    let (_, premium) = p.sign_in("premium@example.com").await;

    let ask = |token: String, n: usize| {
        let request = p
            .client
            .post(p.url("/v1/ai/chat/completions"))
            .bearer_auth(token)
            .json(&json!({"model": "busy", "messages": [{"role": "user", "content": format!("q{n}")}]}));
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            let status = response.status();
            (
                status,
                retry_after,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        })
    };
    // Three free calls fill the free share (3 of 4); the fourth free call is shed.
    let mut calls = Vec::new();
    for n in 0..3 {
        calls.push(ask(free.clone(), n));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (status, retry_after, body) = ask(free.clone(), 3).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["reason"], "OVERLOADED", "{body}");
    assert_eq!(retry_after.unwrap(), "1");
    // Premium still gets the last slot.
    let premium_call = ask(premium.clone(), 4);
    for call in calls {
        assert_eq!(call.await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(premium_call.await.unwrap().0, StatusCode::OK);
    assert!(p.metrics().await.contains("gateway_shed_total"));
    p.stop().await;
}

/// An upstream named by DNS (`dns:///HOST:PORT`, as for a headless Service): the gateway
/// resolves it, balances over the addresses, and lists them in `/status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_named_by_dns_is_resolved_and_balanced() {
    let course = TestPlatform::start_with(Component::Service("course"), &[]).await;
    let user = TestPlatform::start_with(Component::Service("user"), &[]).await;
    let user_url = format!("http://{}", user.grpc_addr());
    let course_target = format!("dns:///localhost:{}", course.grpc_addr().port());
    let gateway = TestPlatform::start_with(
        Component::Gateway,
        &[
            ("DUOVARSITY_USER_SERVICE_URL", user_url.as_str()),
            ("DUOVARSITY_COURSE_SERVICE_URL", course_target.as_str()),
        ],
    )
    .await;
    // localhost resolves to 127.0.0.1 (and ::1 where it is configured, which nothing
    // listens on: that endpoint is ejected and idempotent reads go to the other).
    for _ in 0..10 {
        let (status, body) = gateway.call(Method::GET, "/v1/courses", None, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, report) = gateway.admin("/status").await;
    let endpoints = report["endpoints"]["duovarsity.course.v1.CourseService"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"));
    let expected = format!("http://127.0.0.1:{}", course.grpc_addr().port());
    assert!(
        endpoints.iter().any(|e| e["url"] == expected.as_str()),
        "{report}"
    );
    gateway.stop().await;
    course.stop().await;
    user.stop().await;
}

/// An anonymous read of a course page through `gateway`: (status, title, Age header,
/// ETag header).
async fn course_page(
    gateway: &TestPlatform,
    slug: &str,
    if_none_match: Option<&str>,
) -> (StatusCode, String, Option<String>, Option<String>) {
    let mut request = gateway
        .client
        .get(gateway.url(&format!("/v1/courses/{slug}")));
    if let Some(etag) = if_none_match {
        request = request.header("if-none-match", etag);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| header_of(&response, name);
    let (status, age, etag) = (response.status(), header("age"), header("etag"));
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let title = body["course"]["title"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (status, title, age, etag)
}

/// The edge cache: a public course page is served from the gateway's cache (with `Age`),
/// revalidated by ETag (304), never for signed-in callers, and dropped the moment the
/// course changes: in the process that changed it, and in another gateway told through
/// Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_pages_are_cached_at_the_edge_until_the_course_changes() {
    let database = duovarsity_testkit::TempPostgres::create().await;
    let redis = PrivateRedis::start();
    let (platform, other) =
        TestPlatform::with_second_gateway(&database.url, &redis.url(), &["user", "course"]).await;
    let (_, admin) = platform.sign_in(duovarsity_testkit::TEST_ADMIN).await;
    let (course_id, _) = platform.course_with_lesson(&admin, "edge-cached").await;
    platform.publish(&admin, &course_id).await;

    for gateway in [&platform, &other] {
        let (status, title, age, etag) = course_page(gateway, "edge-cached", None).await;
        assert_eq!(
            (status, title.as_str(), age),
            (StatusCode::OK, "edge-cached", None)
        );
        let etag = etag.expect("a public page has an ETag");
        let (status, _, age, _) = course_page(gateway, "edge-cached", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(age.is_some(), "the second read comes from the edge cache");
        let (status, _, _, _) = course_page(gateway, "edge-cached", Some(&etag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        let signed_in = gateway
            .client
            .get(gateway.url("/v1/courses/edge-cached"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), StatusCode::OK);
        assert!(
            signed_in.headers().get("age").is_none(),
            "signed-in reads are not cached"
        );
    }

    let (status, body) = platform
        .call(
            Method::PATCH,
            &format!("/v1/courses/{course_id}"),
            Some(&admin),
            Some(json!({"title": "Renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Both gateways were serving the old page from cache for up to a minute.
    for gateway in [&platform, &other] {
        let started = std::time::Instant::now();
        loop {
            let (status, title, _, _) = course_page(gateway, "edge-cached", None).await;
            assert_eq!(status, StatusCode::OK);
            if title == "Renamed" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the edge of {} still serves {title:?}",
                gateway.url("")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    other.stop().await;
    platform.stop().await;
    database.drop_database().await;
}
