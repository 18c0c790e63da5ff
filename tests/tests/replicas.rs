//! The two-level cache against a real Redis: replicas converge after a write, and a
//! stampede of misses makes one load.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use duovarsity::Component;
use duovarsity_common::cache::{CacheHub, CacheSettings};
use duovarsity_proto::course::GetCourseRequest;
use duovarsity_proto::course::course_service_client::CourseServiceClient;
use duovarsity_testkit::{TEST_PASSWORD, TempPostgres, TestPlatform, redis_url};
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

#[tokio::test]
async fn an_update_through_one_replica_reaches_every_replica() {
    let database = TempPostgres::create().await;
    let redis = redis_url();
    let user = TestPlatform::start_with(
        Component::Service("user"),
        &[
            ("DUOVARSITY_DATABASE_URL", &database.url),
            ("DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL", "admin@example.com"),
            ("DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD", TEST_PASSWORD),
        ],
    )
    .await;
    let user_url = format!("http://{}", user.grpc_addr());
    let course_settings = [
        ("DUOVARSITY_DATABASE_URL", database.url.as_str()),
        ("DUOVARSITY_REDIS_URL", redis.as_str()),
        ("DUOVARSITY_USER_SERVICE_URL", user_url.as_str()),
    ];
    let replica_a = TestPlatform::start_with(Component::Service("course"), &course_settings).await;
    let replica_b = TestPlatform::start_with(Component::Service("course"), &course_settings).await;
    let course_url = format!("http://{}", replica_a.grpc_addr());
    let gateway = TestPlatform::start_with(
        Component::Gateway,
        &[
            ("DUOVARSITY_USER_SERVICE_URL", &user_url),
            ("DUOVARSITY_COURSE_SERVICE_URL", &course_url),
        ],
    )
    .await;

    let (_, admin) = gateway.sign_in("admin@example.com").await;
    let (status, course) = gateway
        .call(Method::POST, "/v1/courses", Some(&admin), Some(json!({"slug": "cached", "title": "Before", "level": "LEVEL_BEGINNER", "language": "en"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{course}");
    let id = course["id"].as_str().unwrap().to_string();
    // Both replicas now hold the outline in L1 (and it is in L2).
    assert_eq!(title_at(&replica_a, &id, &admin).await, "Before");
    assert_eq!(title_at(&replica_b, &id, &admin).await, "Before");

    let (status, _) = gateway
        .call(
            Method::PATCH,
            &format!("/v1/courses/{id}"),
            Some(&admin),
            Some(json!({"title": "After"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let started = Instant::now();
    loop {
        if title_at(&replica_b, &id, &admin).await == "After" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "replica B still serves the old title after 1 s (L1 TTL is 10 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(title_at(&replica_a, &id, &admin).await, "After");

    gateway.stop().await;
    replica_a.stop().await;
    replica_b.stop().await;
    user.stop().await;
    database.drop_database().await;
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
    assert!(
        hub.ping().await.is_err(),
        "readiness tells that Redis is down"
    );

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
