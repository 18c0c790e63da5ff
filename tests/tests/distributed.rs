//! The distributed mode for real: every service its own platform (as its own pod would
//! be), PostgreSQL for storage, Redis for caches, live wake-ups and presence, and events
//! through a Kafka-protocol broker (tansu, started by the test setup). Two notification
//! replicas share the event topics as one consumer group, each with its own gateway.

use std::collections::HashSet;
use std::time::Duration;

use duovarsity::Component;
use duovarsity_testkit::{
    Socket, TEST_PASSWORD, TempPostgres, TestPlatform, kafka_brokers, next_frame, redis_url,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The next `count` frames on `socket` (within 15 s): notification titles, and
/// `progress <percent>` for progress changes.
async fn frames(socket: &mut Socket, count: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while seen.len() < count {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = next_frame(socket, left)
            .await
            .unwrap_or_else(|| panic!("only {seen:?} of {count} frames arrived within 15 s"));
        seen.push(match frame["notification"]["title"].as_str() {
            Some(title) => title.to_string(),
            None => format!("progress {}", frame["progress"]["percent"]),
        });
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_talk_through_kafka_and_replicas_share_live_delivery() {
    let database = TempPostgres::create().await;
    let redis = redis_url();
    let brokers = kafka_brokers();
    // Topics and groups of this run only: runs share the broker.
    let prefix = format!("run{}.", uuid::Uuid::now_v7().simple());
    let shared = [
        ("DUOVARSITY_DATABASE_URL", database.url.as_str()),
        ("DUOVARSITY_REDIS_URL", redis.as_str()),
        ("DUOVARSITY_KAFKA_BROKERS", brokers.as_str()),
        ("DUOVARSITY_KAFKA_TOPIC_PREFIX", prefix.as_str()),
    ];
    let with = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        shared
            .iter()
            .chain(extra)
            .map(|(k, v)| (*k, v.to_string()))
            .collect()
    };
    let start = |component: Component, settings: Vec<(&'static str, String)>| async move {
        let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        TestPlatform::start_with(component, &settings).await
    };

    let user = start(
        Component::Service("user"),
        with(&[
            ("DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL", "admin@example.com"),
            ("DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD", TEST_PASSWORD),
        ]),
    )
    .await;
    let user_url = format!("http://{}", user.grpc_addr());
    let course = start(
        Component::Service("course"),
        with(&[("DUOVARSITY_USER_SERVICE_URL", &user_url)]),
    )
    .await;
    let course_url = format!("http://{}", course.grpc_addr());
    let notification_a = start(
        Component::Service("notification"),
        with(&[("DUOVARSITY_USER_SERVICE_URL", &user_url)]),
    )
    .await;
    let notification_b = start(
        Component::Service("notification"),
        with(&[("DUOVARSITY_USER_SERVICE_URL", &user_url)]),
    )
    .await;
    let gateway_to = |notification: &TestPlatform| {
        with(&[
            ("DUOVARSITY_USER_SERVICE_URL", &user_url),
            ("DUOVARSITY_COURSE_SERVICE_URL", &course_url),
            (
                "DUOVARSITY_NOTIFICATION_SERVICE_URL",
                &format!("http://{}", notification.grpc_addr()),
            ),
        ])
    };
    let gateway_a = start(Component::Gateway, gateway_to(&notification_a)).await;
    let gateway_b = start(Component::Gateway, gateway_to(&notification_b)).await;

    // Registering goes user service -> outbox -> Kafka -> a notification replica.
    let (learner_id, learner) = gateway_a.sign_up("kafka-learner@example.com").await;
    let mut tab_a = gateway_a.live(&learner, 0).await;
    let mut tab_b = gateway_b.live(&learner, 0).await;
    for tab in [&mut tab_a, &mut tab_b] {
        assert_eq!(frames(tab, 1).await, ["Welcome to Duovarsity"]);
    }

    // Presence counts the connections on both replicas, whichever one is asked.
    assert_eq!(gateway_b.connections(&learner, &learner_id).await, 2);

    // Learning events from the course service. Each is consumed by one replica; both
    // tabs hear of it well before the 30 s safety reread, so wake-ups crossed replicas.
    let (_, admin) = gateway_a.sign_in("admin@example.com").await;
    let (course_id, lesson_id) = gateway_a.course_with_lesson(&admin, "on-kafka").await;
    gateway_a.publish(&admin, &course_id).await;
    gateway_a.enroll(&learner, &course_id).await;
    let (status, _) = gateway_a
        .call(
            Method::PUT,
            &format!("/v1/lessons/{lesson_id}/progress"),
            Some(&learner),
            Some(json!({"percent": 100})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let learning = [
        "Enrollment confirmed",
        "progress 100",
        "Lesson completed",
        "Course completed: your certificate",
    ];
    for tab in [&mut tab_a, &mut tab_b] {
        let got: HashSet<String> = frames(tab, learning.len()).await.into_iter().collect();
        let want: HashSet<String> = learning.iter().map(|t| t.to_string()).collect();
        assert_eq!(got, want);
        assert!(
            next_frame(tab, Duration::from_millis(500)).await.is_none(),
            "nothing twice"
        );
    }

    // Exactly once into the inbox, whichever replica consumed what.
    let (_, inbox): (StatusCode, Value) = gateway_b
        .call(Method::GET, "/v1/notifications", Some(&learner), None)
        .await;
    assert_eq!(
        inbox["notifications"].as_array().unwrap().len(),
        4,
        "{inbox}"
    );

    // Mail: one welcome for the learner across both replicas' mailers.
    let welcome_mails = || {
        [&notification_a, &notification_b]
            .iter()
            .flat_map(|replica| {
                std::fs::read_dir(replica.data_dir().join("mail"))
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
            })
            .filter(|mail| mail.contains("kafka-learner@example.com") && mail.contains("Welcome"))
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while welcome_mails() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(welcome_mails(), 1);

    drop((tab_a, tab_b));
    for platform in [
        gateway_a,
        gateway_b,
        notification_a,
        notification_b,
        course,
        user,
    ] {
        platform.stop().await;
    }
    database.drop_database().await;
}

/// A Kafka-protocol broker of this test alone (tansu, as installed by the test setup),
/// stopped when dropped.
struct Broker(std::process::Child);

impl Broker {
    fn start(port: u16) -> Self {
        let tansu = std::env::var("DUOVARSITY_TEST_TANSU").expect(
            "DUOVARSITY_TEST_TANSU is not set: run the tests with `make test` (scripts/test-services.sh installs tansu)",
        );
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tansu starts");
        Self(child)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With no broker, state changes still succeed and their events wait in the outbox; once
/// a broker is up, each event reaches the consumer exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_for_the_broker_and_then_arrive_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let brokers = format!("127.0.0.1:{port}");
    let p = TestPlatform::start_with(
        Component::All,
        &[("DUOVARSITY_KAFKA_BROKERS", brokers.as_str())],
    )
    .await;

    // Nobody listens on the broker's port yet: signing up works all the same.
    let mut learners = Vec::new();
    for n in 0..5 {
        learners.push(p.sign_up(&format!("patient-{n}@example.com")).await.1);
    }
    // Their welcomes wait in the user service's outbox meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for token in &learners {
        let (status, inbox) = p
            .call(Method::GET, "/v1/notifications", Some(token), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            inbox["notifications"].as_array().unwrap().len(),
            0,
            "{inbox}"
        );
    }

    let _broker = Broker::start(port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    for token in &learners {
        loop {
            let (_, inbox) = p
                .call(Method::GET, "/v1/notifications", Some(token), None)
                .await;
            let count = inbox["notifications"].as_array().unwrap().len();
            if count >= 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no welcome 90 s after the broker started"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for token in &learners {
        let (_, inbox) = p
            .call(Method::GET, "/v1/notifications", Some(token), None)
            .await;
        assert_eq!(
            inbox["notifications"].as_array().unwrap().len(),
            1,
            "exactly one welcome each: {inbox}"
        );
    }
    p.stop().await;
}
