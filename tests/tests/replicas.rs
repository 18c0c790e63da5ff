//! Several replicas and what they share, against real PostgreSQL and Redis servers:
//! replicas converge after a write, a stampede of misses makes one load, and an outage of
//! Redis or PostgreSQL degrades service (fast answers, fast 503s) until it comes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use duovarsity::Component;
use duovarsity_common::cache::{CacheHub, CacheSettings};
use duovarsity_proto::course::GetCourseRequest;
use duovarsity_proto::course::course_service_client::CourseServiceClient;
use duovarsity_testkit::{
    PrivatePostgres, PrivateRedis, TEST_PASSWORD, TempPostgres, TestPlatform, redis_url,
};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The title a replica serves, read over gRPC as the (admin) owner of the draft.
async fn title_at(replica: &TestPlatform, course_id: &str, token: &str) -> String {
    let mut client = CourseServiceClient::connect(format!("http://{}", replica.grpc_addr()))
        .await
        .unwrap();
    let mut request = tonic::Request::new(GetCourseRequest {
        id: course_id.to_string(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let outline = client.get_course(request).await.unwrap().into_inner();
    outline.course.unwrap().title
}

/// A user service, two course replicas on one database and one Redis, and a gateway in
/// front of replica A.
struct Replicas {
    user: TestPlatform,
    a: TestPlatform,
    b: TestPlatform,
    gateway: TestPlatform,
}

impl Replicas {
    async fn start(database_url: &str, redis: &str, extra: &[(&str, &str)]) -> Self {
        let user = TestPlatform::start_with(
            Component::Service("user"),
            &[
                ("DUOVARSITY_DATABASE_URL", database_url),
                ("DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL", "admin@example.com"),
                ("DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD", TEST_PASSWORD),
            ],
        )
        .await;
        let user_url = format!("http://{}", user.grpc_addr());
        let mut course_settings = vec![
            ("DUOVARSITY_DATABASE_URL", database_url),
            ("DUOVARSITY_REDIS_URL", redis),
            ("DUOVARSITY_USER_SERVICE_URL", user_url.as_str()),
        ];
        course_settings.extend_from_slice(extra);
        let a = TestPlatform::start_with(Component::Service("course"), &course_settings).await;
        let b = TestPlatform::start_with(Component::Service("course"), &course_settings).await;
        let course_url = format!("http://{}", a.grpc_addr());
        let gateway = TestPlatform::start_with(
            Component::Gateway,
            &[
                ("DUOVARSITY_USER_SERVICE_URL", &user_url),
                ("DUOVARSITY_COURSE_SERVICE_URL", &course_url),
            ],
        )
        .await;
        Self {
            user,
            a,
            b,
            gateway,
        }
    }

    /// A draft course titled `title`, through the gateway; its id.
    async fn course(&self, admin: &str, slug: &str, title: &str) -> String {
        let body =
            json!({"slug": slug, "title": title, "level": "LEVEL_BEGINNER", "language": "en"});
        let (status, course) = self
            .gateway
            .call(Method::POST, "/v1/courses", Some(admin), Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "{course}");
        course["id"].as_str().unwrap().to_string()
    }

    /// Renames a course through the gateway (replica A).
    async fn rename(&self, admin: &str, id: &str, title: &str) {
        let (status, body) = self
            .gateway
            .call(
                Method::PATCH,
                &format!("/v1/courses/{id}"),
                Some(admin),
                Some(json!({"title": title})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn stop(self) {
        self.gateway.stop().await;
        self.a.stop().await;
        self.b.stop().await;
        self.user.stop().await;
    }
}

/// Waits until `replica` serves `title`, failing the test after `within`.
async fn converges(replica: &TestPlatform, id: &str, admin: &str, title: &str, within: Duration) {
    let started = Instant::now();
    loop {
        if title_at(replica, id, admin).await == title {
            return;
        }
        assert!(
            started.elapsed() < within,
            "still the old title after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_update_through_one_replica_reaches_every_replica() {
    let database = TempPostgres::create().await;
    let r = Replicas::start(&database.url, &redis_url(), &[]).await;
    let (_, admin) = r.gateway.sign_in("admin@example.com").await;
    let id = r.course(&admin, "cached", "Before").await;
    // Both replicas now hold the outline in L1 (and it is in L2).
    assert_eq!(title_at(&r.a, &id, &admin).await, "Before");
    assert_eq!(title_at(&r.b, &id, &admin).await, "Before");

    r.rename(&admin, &id, "After").await;
    // Through Redis invalidation, well within the L1 TTL (10 s).
    converges(&r.b, &id, &admin, "After", Duration::from_secs(1)).await;
    assert_eq!(title_at(&r.a, &id, &admin).await, "After");

    r.stop().await;
    database.drop_database().await;
}

/// Reads a course on `replica` over one gRPC connection until `stop`; the slowest read.
async fn read_load(
    replica: std::net::SocketAddr,
    id: String,
    token: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (usize, Duration) {
    let mut client = CourseServiceClient::connect(format!("http://{replica}"))
        .await
        .unwrap();
    let (mut reads, mut slowest) = (0, Duration::ZERO);
    while !stop.load(Ordering::SeqCst) {
        let mut request = tonic::Request::new(GetCourseRequest { id: id.clone() });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let started = Instant::now();
        let answer = client.get_course(request).await;
        assert!(answer.is_ok(), "a read failed: {answer:?}");
        slowest = slowest.max(started.elapsed());
        reads += 1;
    }
    (reads, slowest)
}

/// Redis stopped under read load: no read waits longer than the Redis deadline plus a
/// store read, every read answers, an update made meanwhile reaches the other replica
/// within the L1 TTL (no invalidation can travel), and once Redis is back invalidation
/// works again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_keep_answering_through_a_redis_outage_and_converge_after_it() {
    let database = TempPostgres::create().await;
    let mut redis = PrivateRedis::start();
    let ttl = Duration::from_secs(2);
    let r = Replicas::start(
        &database.url,
        &redis.url(),
        &[("DUOVARSITY_CACHE_L1_TTL_SECS", "2")],
    )
    .await;
    let (_, admin) = r.gateway.sign_in("admin@example.com").await;
    let id = r.course(&admin, "outage", "Before").await;
    assert_eq!(title_at(&r.b, &id, &admin).await, "Before");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = [r.a.grpc_addr(), r.b.grpc_addr()]
        .into_iter()
        .map(|replica| tokio::spawn(read_load(replica, id.clone(), admin.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.rename(&admin, &id, "During").await;
    converges(&r.b, &id, &admin, "During", ttl + Duration::from_secs(1)).await;

    redis.restart();
    // Once the replicas' subscriptions are back, an update travels by invalidation again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.rename(&admin, &id, "After").await;
    converges(&r.b, &id, &admin, "After", ttl).await;
    stop.store(true, Ordering::SeqCst);
    for replica in load {
        let (reads, slowest) = replica.await.unwrap();
        assert!(reads > 10, "{reads} reads");
        assert!(
            slowest < Duration::from_secs(1),
            "a read waited {slowest:?} (the Redis deadline is 250 ms)"
        );
    }
    r.stop().await;
    database.drop_database().await;
}

/// PostgreSQL stopped: requests that need it fail fast with 503 and Retry-After, readiness
/// says so, and the same processes serve again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_fails_fast_and_recovers_without_a_restart() {
    let mut postgres = PrivatePostgres::start();
    let p = TestPlatform::start_with_admin(
        Component::All,
        &[("DUOVARSITY_DATABASE_URL", &postgres.url())],
    )
    .await;
    let (_, admin) = p.sign_in("admin@example.com").await;
    let (status, _) = p.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);

    postgres.stop();
    let body =
        json!({"slug": "down", "title": "Down", "level": "LEVEL_BEGINNER", "language": "en"});
    for _ in 0..3 {
        let started = Instant::now();
        let response = p
            .client
            .post(p.url("/v1/courses"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let waited = started.elapsed();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            response.headers().contains_key("retry-after"),
            "{:?}",
            response.headers()
        );
        assert!(
            waited < Duration::from_secs(3),
            "a request waited {waited:?}"
        );
    }
    // Readiness probes rerun every 5 s: the course service reports NOT_SERVING, while
    // the gateway stays ready (routes of other services do not need this database).
    course_health_becomes(&p, "NOT_SERVING", Duration::from_secs(10)).await;
    let (status, _) = p.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);

    postgres.restart();
    let started = Instant::now();
    loop {
        let (status, course) = p
            .call(
                Method::POST,
                "/v1/courses",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        if status == StatusCode::OK {
            assert_eq!(course["title"], "Down");
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{course}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no recovery within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    course_health_becomes(&p, "SERVING", Duration::from_secs(10)).await;
    p.stop().await;
}

/// Waits until the gateway's `/status` reports the course service as `state`, failing
/// the test after `within`.
async fn course_health_becomes(p: &TestPlatform, state: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let (_, report) = p.admin("/status").await;
        if report["upstreams"]["duovarsity.course.v1.CourseService"] == state {
            return;
        }
        assert!(
            started.elapsed() < within,
            "the course service is not {state}: {report}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_stampede_of_a_thousand_misses_makes_one_store_call_with_redis() {
    let hub = CacheHub::connect(CacheSettings {
        redis_url: Some(redis_url()),
        ..Default::default()
    })
    .await
    .unwrap();
    let cache = hub.cache("stampede_test");
    let key = uuid_like();
    let loads = Arc::new(AtomicUsize::new(0));
    let readers = (0..1000).map(|_| {
        let cache = cache.clone();
        let loads = loads.clone();
        let key = key.clone();
        tokio::spawn(async move {
            cache
                .get_or_load(&key, || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(Bytes::from_static(b"outline"))
                })
                .await
                .unwrap()
        })
    });
    for value in futures::future::join_all(readers).await {
        assert_eq!(value.unwrap(), Bytes::from_static(b"outline"));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    // A second process (another hub) finds it in L2 without loading.
    let other = CacheHub::connect(CacheSettings {
        redis_url: Some(redis_url()),
        ..Default::default()
    })
    .await
    .unwrap();
    let value = other
        .cache("stampede_test")
        .get_or_load(&key, || async { panic!("the value is in Redis") })
        .await
        .unwrap();
    assert_eq!(value, Bytes::from_static(b"outline"));
    cache.invalidate(&key).await;
}

fn uuid_like() -> String {
    format!(
        "test-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )
}

/// Redis is an accelerator: with it gone, misses load from the store within the Redis
/// deadline instead of hanging, invalidation does not hang either, and once Redis is back
/// the caches use it again without a restart.
#[tokio::test]
async fn a_redis_outage_degrades_to_the_store_and_recovers() {
    let mut redis = duovarsity_testkit::PrivateRedis::start();
    let settings = CacheSettings {
        redis_url: Some(redis.url()),
        redis_deadline: Duration::from_millis(250),
        redis_retry_after: Duration::from_millis(300),
        ..CacheSettings::default()
    };
    let hub = CacheHub::connect(settings).await.unwrap();
    let cache = hub.cache("outage");
    let loads = Arc::new(AtomicUsize::new(0));
    let load = |value: &'static str| {
        let loads = loads.clone();
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(Bytes::from_static(value.as_bytes()))
        }
    };
    assert_eq!(cache.get_or_load("a", load("A")).await.unwrap(), "A");
    let raw = redis::Client::open(redis.url()).unwrap();
    let mut direct = raw.get_multiplexed_async_connection().await.unwrap();
    let stored: Option<Vec<u8>> =
        redis::AsyncCommands::get(&mut direct, "duovarsity:cache:outage:a")
            .await
            .unwrap();
    assert_eq!(stored.as_deref(), Some(&b"A"[..]), "written through to L2");
    assert!(hub.ping().await.is_ok());

    redis.stop();
    // Each of these used to wait for the connection's retries (seconds); now a miss goes to
    // the store once Redis misses its deadline, and later ones skip Redis altogether.
    for key in ["b", "c", "d"] {
        let started = Instant::now();
        assert_eq!(
            cache.get_or_load(key, load("fresh")).await.unwrap(),
            "fresh"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a miss with Redis down took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        cache.get_or_load("a", load("A")).await.unwrap(),
        "A",
        "L1 still serves"
    );
    let started = Instant::now();
    cache.invalidate("a").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "invalidation hung"
    );
    assert!(hub.ping().await.is_err(), "a ping tells that Redis is down");

    redis.restart();
    // Back without a restart of the hub: a later miss is written to the new Redis.
    let mut direct = loop {
        if let Ok(connection) = raw.get_multiplexed_async_connection().await {
            break connection;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        let key = format!("after-{n}");
        cache.get_or_load(&key, load("again")).await.unwrap();
        let stored: Option<Vec<u8>> =
            redis::AsyncCommands::get(&mut direct, format!("duovarsity:cache:outage:{key}"))
                .await
                .unwrap();
        if stored.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache never used Redis again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hub.ping().await.is_ok());
}

/// A course service that accepts calls and never answers: the content service's access
/// check gives up at its deadline with UNAVAILABLE instead of hanging the read, and when
/// its caller has less time left, the course service is told the caller's remaining
/// deadline (`grpc-timeout`), not the content service's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_course_service_costs_a_read_its_deadline_not_a_hang() {
    use duovarsity_proto::content::GetLessonContentRequest;
    use duovarsity_proto::content::content_service_client::ContentServiceClient;
    let told = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let silent = {
        let told = told.clone();
        duovarsity_testkit::MockServer::serve(axum::Router::new().route(
            "/duovarsity.course.v1.CourseService/CheckLessonAccess",
            axum::routing::post(move |headers: axum::http::HeaderMap| async move {
                let timeout = headers
                    .get("grpc-timeout")
                    .map(|v| v.to_str().unwrap().to_string());
                told.lock().unwrap().push(timeout.unwrap_or_default());
                tokio::time::sleep(Duration::from_secs(60)).await;
            }),
        ))
        .await
    };
    let content = TestPlatform::start_with(
        Component::Service("content"),
        &[("DUOVARSITY_COURSE_SERVICE_URL", &silent.url())],
    )
    .await;
    let mut client = ContentServiceClient::connect(format!("http://{}", content.grpc_addr()))
        .await
        .unwrap();
    let read = |deadline: Option<Duration>| {
        let mut request = tonic::Request::new(GetLessonContentRequest {
            lesson_id: uuid::Uuid::now_v7().to_string(),
        });
        if let Some(deadline) = deadline {
            request.set_timeout(deadline);
        }
        request
    };
    let started = Instant::now();
    let status = client.get_lesson_content(read(None)).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        waited < Duration::from_secs(6),
        "the read waited {waited:?}"
    );

    let started = Instant::now();
    let status = client
        .get_lesson_content(read(Some(Duration::from_millis(400))))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "the read waited {waited:?}: {status:?}"
    );
    let told = told.lock().unwrap().clone();
    let millis = |timeout: &str| {
        let value: u64 = timeout[..timeout.len() - 1].parse().unwrap();
        match timeout.as_bytes()[timeout.len() - 1] {
            b'm' => value,
            b'u' => value / 1000,
            b'n' => value / 1_000_000,
            b'S' => value * 1000,
            _ => panic!("unit of {timeout}"),
        }
    };
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(
        (2500..=3000).contains(&millis(&told[0])),
        "own deadline: {told:?}"
    );
    assert!(
        (1..=400).contains(&millis(&told[1])),
        "the caller's remaining deadline: {told:?}"
    );
    content.stop().await;
}

/// The endpoints the gateway at `gateway` balances `service` over, from `/status`.
async fn endpoints_of(gateway: &TestPlatform, service: &str) -> Vec<String> {
    let (_, status) = gateway.admin("/status").await;
    let mut urls: Vec<String> = status["endpoints"][service]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["url"].as_str().unwrap().to_string())
        .collect();
    urls.sort();
    urls
}

/// Waits until the gateway balances the course service over exactly `expected`; how long
/// it took.
async fn course_endpoints_become(
    gateway: &TestPlatform,
    expected: &[&TestPlatform],
    within: Duration,
) -> Duration {
    let mut want: Vec<String> = expected
        .iter()
        .map(|replica| format!("http://{}", replica.grpc_addr()))
        .collect();
    want.sort();
    let started = Instant::now();
    loop {
        let now = endpoints_of(gateway, "duovarsity.course.v1.CourseService").await;
        if now == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "after {within:?} the gateway balances over {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway that finds the course replicas by watching their EndpointSlices on a fake
/// API server: under a read load, a replica that joins takes traffic within a second, one
/// that terminates is drained, a watch that loses its history (410 Gone) lists again and
/// catches up with what changed meanwhile, and no read fails throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_steer_the_gateway_without_losing_a_read() {
    use duovarsity_testkit::kube::{FakeKube, SliceEndpoint};
    let database = TempPostgres::create().await;
    let r = Replicas::start(&database.url, &redis_url(), &[]).await;
    let (_, admin) = r.gateway.sign_in("admin@example.com").await;
    let id = r.course(&admin, "discovered", "Found").await;

    let kube = FakeKube::start().await;
    let port = |replica: &TestPlatform| replica.grpc_addr().port();
    let course_slice = |name: &str, replica: &TestPlatform, endpoint: SliceEndpoint<'_>| {
        kube.apply("learn", name, "course", port(replica), &[endpoint]);
    };
    course_slice("course-a", &r.a, SliceEndpoint::ready("127.0.0.1"));
    // Another Service's slice in the namespace is not the course's.
    kube.apply(
        "learn",
        "user-a",
        "user",
        port(&r.user),
        &[SliceEndpoint::ready("127.0.0.1")],
    );
    let user_url = format!("http://{}", r.user.grpc_addr());
    let api = kube.url();
    let gateway = TestPlatform::start_with(
        Component::Gateway,
        &[
            ("DUOVARSITY_USER_SERVICE_URL", &user_url),
            (
                "DUOVARSITY_COURSE_SERVICE_URL",
                "kubernetes:///course.learn:grpc",
            ),
            ("DUOVARSITY_KUBERNETES_API_URL", &api),
        ],
    )
    .await;
    course_endpoints_become(&gateway, &[&r.a], Duration::from_secs(5)).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (
                gateway.client.clone(),
                gateway.url(&format!("/v1/courses/{id}")),
            );
            let (admin, stop, reads) = (admin.clone(), stop.clone(), reads.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let response = client.get(&url).bearer_auth(&admin).send().await.unwrap();
                    if response.status() != StatusCode::OK {
                        failures.push((response.status(), response.text().await.unwrap()));
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();

    course_slice("course-b", &r.b, SliceEndpoint::ready("127.0.0.1"));
    let joined = course_endpoints_become(&gateway, &[&r.a, &r.b], Duration::from_secs(1)).await;
    course_slice("course-a", &r.a, SliceEndpoint::terminating("127.0.0.1"));
    let drained = course_endpoints_become(&gateway, &[&r.b], Duration::from_secs(1)).await;

    // The history is compacted and the watch ends; A comes back meanwhile. The watch
    // resumes from a version that is gone, gets 410, lists again and sees A.
    kube.expire();
    course_slice("course-a", &r.a, SliceEndpoint::ready("127.0.0.1"));
    let relisted = course_endpoints_become(&gateway, &[&r.a, &r.b], Duration::from_secs(10)).await;
    let (lists, watches, gone) = kube.requests();
    assert!(
        gone >= 1 && lists >= 2 && watches >= 2,
        "lists {lists}, watches {watches}, 410s {gone}"
    );

    kube.delete("learn", "course-b");
    let left = course_endpoints_become(&gateway, &[&r.a], Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for task in load {
        failures.extend(task.await.unwrap());
    }
    let reads = reads.load(Ordering::Relaxed);
    eprintln!(
        "{reads} reads; joined in {joined:?}, drained in {drained:?}, relisted in {relisted:?}, left in {left:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(reads > 100, "the load ran: {reads} reads");

    gateway.stop().await;
    r.stop().await;
    database.drop_database().await;
}

/// A write sent to a replica that refuses connections (one restarting) never left the
/// gateway, so it goes to another replica instead of failing: every write succeeds while
/// one of the two course endpoints is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_a_replica_refused_goes_to_another_replica() {
    let platform = TestPlatform::start_with_admin(Component::All, &[]).await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let live = format!("http://{}", platform.grpc_addr());
    let courses = format!("http://{dead},{live}");
    let gateway = TestPlatform::start_with(
        Component::Gateway,
        &[
            ("DUOVARSITY_USER_SERVICE_URL", live.as_str()),
            ("DUOVARSITY_COURSE_SERVICE_URL", courses.as_str()),
        ],
    )
    .await;
    let (_, admin) = gateway.sign_in(duovarsity_testkit::TEST_ADMIN).await;
    for n in 0..30 {
        let course = serde_json::json!({"slug": format!("refused-{n}"), "title": format!("Refused {n}"),
                "level": "LEVEL_BEGINNER", "language": "en"});
        let (status, body) = gateway
            .call(
                reqwest::Method::POST,
                "/v1/courses",
                Some(&admin),
                Some(course),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "write {n}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.stop().await;
    platform.stop().await;
}

/// Overload is refused early: with a service's one pooled connection stuck behind a lock
/// (taken from outside) and its queue of waiters full, further requests answer 503
/// `OVERLOADED` with `Retry-After` within milliseconds, instead of waiting out the pool's
/// acquire timeout; the queued ones complete once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_queue_refuses_at_once_instead_of_timing_out() {
    use sqlx::Connection as _;
    use sqlx::Executor as _;

    let database = TempPostgres::create().await;
    let p = TestPlatform::start_with_admin(
        Component::All,
        &[
            ("DUOVARSITY_DATABASE_URL", &database.url),
            ("DUOVARSITY_DATABASE_MAX_CONNECTIONS", "1"),
        ],
    )
    .await;
    let (_, learner) = p.sign_up("crowded@example.com").await;
    let mut outside = sqlx::PgConnection::connect(&database.url).await.unwrap();
    outside.execute("BEGIN").await.unwrap();
    outside
        .execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    // One connection with PostgreSQL's 1 s acquire timeout queues 100 waiters.
    let answers = futures::future::join_all((0..240).map(|n| {
        let request = p
            .client
            .patch(p.url("/v1/users/me"))
            .bearer_auth(&learner)
            .json(&json!({"displayName": format!("Crowd {n}")}));
        async move {
            let sent = Instant::now();
            let response = request.send().await.unwrap();
            let took = sent.elapsed();
            let status = response.status();
            let retry_after = response.headers().contains_key("retry-after");
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, retry_after, body, took)
        }
    }));
    // Release the lock once the queue is full, early enough for the queued ones to be
    // served within the pool's acquire timeout (1 s on PostgreSQL).
    let release = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        outside.execute("COMMIT").await.unwrap();
    };
    let (answers, ()) = tokio::join!(answers, release);
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(
        refused.len() >= 60,
        "a burst past the queue is refused: {:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    for (_, retry_after, body, took) in &refused {
        assert_eq!(body["reason"], "OVERLOADED", "{body}");
        assert!(retry_after, "{body}");
        assert!(
            *took < Duration::from_millis(400),
            "refused after {took:?}: overload must not wait for the lock or the pool's timeout"
        );
    }
    // The admitted ones waited for the lock and then succeeded.
    let served = answers
        .iter()
        .filter(|(status, ..)| *status == StatusCode::OK)
        .count();
    assert_eq!(served + refused.len(), answers.len(), "{answers:?}");
    assert!(served >= 1);
    p.stop().await;
    database.drop_database().await;
}

/// The flags a user replica evaluates for the holder of `token`, read over gRPC:
/// (key, variant) pairs.
async fn flags_at(replica: &TestPlatform, token: &str) -> Vec<(String, String)> {
    use duovarsity_proto::flags::EvaluateFlagsRequest;
    use duovarsity_proto::flags::flag_service_client::FlagServiceClient;
    let mut client = FlagServiceClient::connect(format!("http://{}", replica.grpc_addr()))
        .await
        .unwrap();
    let mut request = tonic::Request::new(EvaluateFlagsRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let evaluated = client.evaluate_flags(request).await.unwrap().into_inner();
    evaluated
        .flags
        .into_iter()
        .map(|flag| (flag.key, flag.variant))
        .collect()
}

/// A feature flag changed through one replica is evaluated by another within a second
/// (Redis pub/sub), and with Redis down the other keeps evaluating the last flags it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_change_reaches_another_replica_within_a_second_and_survives_redis_going_down() {
    let database = TempPostgres::create().await;
    let mut redis = PrivateRedis::start();
    let redis_at = redis.url();
    // The replicas sign with the same keys (a shared Secret in Kubernetes).
    let keys = tempfile::tempdir().unwrap();
    let keys_dir = keys.path().display().to_string();
    let settings = [
        ("DUOVARSITY_DATABASE_URL", database.url.as_str()),
        ("DUOVARSITY_REDIS_URL", redis_at.as_str()),
        ("DUOVARSITY_JWT_KEYS_DIR", keys_dir.as_str()),
        // The safety net is slow here: only the change message can meet the second.
        ("DUOVARSITY_FLAGS_RELOAD_SECS", "60"),
    ];
    let a = TestPlatform::start_with_admin(Component::Service("user"), &settings).await;
    let b = TestPlatform::start_with(Component::Service("user"), &settings).await;
    let gateway = TestPlatform::start_with(
        Component::Gateway,
        &[(
            "DUOVARSITY_USER_SERVICE_URL",
            &format!("http://{}", a.grpc_addr()),
        )],
    )
    .await;
    let (_, admin) = gateway.sign_in("admin@example.com").await;
    let rollout = json!({
        "state": "ENABLED",
        "variants": {"on": true, "off": false},
        "defaultVariant": "on",
        "targeting": {"if": [{"==": [{"var": "role"}, "admin"]}, "off"]}
    });
    let (status, body) = gateway
        .call(
            Method::PUT,
            "/v1/admin/flags/ai-tutor",
            Some(&admin),
            Some(rollout),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let changed = Instant::now();
    let wanted = ("ai-tutor".to_string(), "off".to_string());
    loop {
        if flags_at(&b, &admin).await.contains(&wanted) {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "replica B still evaluates the old flags after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        flags_at(&b, &admin).await.contains(&wanted),
        "with Redis down, replica B keeps the last flags"
    );
    redis.restart();
    gateway.stop().await;
    b.stop().await;
    a.stop().await;
}
