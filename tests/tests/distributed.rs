//! The distributed mode for real: every service its own platform (as its own pod would
//! be), PostgreSQL for storage, Redis for caches, live wake-ups and presence, and events
//! through a Kafka-protocol broker (tansu, started by the test setup). Two notification
//! replicas share the event topics as one consumer group, each with its own gateway.

use std::collections::HashSet;
use std::time::Duration;

use duovarsity::Component;
use duovarsity_testkit::{
    Socket, TEST_PASSWORD, TempPostgres, TestPlatform, frame_where, kafka_brokers, next_frame,
    redis_url, subscribe,
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
    // Rooms ask the course service who may be in them; the cap is two sockets per user
    // across both gateways.
    let notification_settings = with(&[
        ("DUOVARSITY_USER_SERVICE_URL", &user_url),
        ("DUOVARSITY_COURSE_SERVICE_URL", &course_url),
        ("DUOVARSITY_LIVE_CONNECTIONS_PER_USER", "2"),
    ]);
    let notification_a = start(
        Component::Service("notification"),
        notification_settings.clone(),
    )
    .await;
    let notification_b = start(
        Component::Service("notification"),
        notification_settings.clone(),
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
    gateway_b
        .wait_for_connections(&learner, &learner_id, 2, Duration::from_secs(5), "two tabs")
        .await;

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

    // A course room across both gateways and both replicas: a learner on each, the
    // admin on B; presence counts both learners whoever asks, names them to the admin,
    // and an announcement posted through A reaches the room on both gateways.
    let (classmate_id, classmate) = gateway_b.sign_up("kafka-classmate@example.com").await;
    gateway_b.enroll(&classmate, &course_id).await;
    let topic = format!("course:{course_id}");
    let mut room_a = gateway_a.live(&learner, 1_000_000).await;
    let mut room_b = gateway_b.live(&classmate, 1_000_000).await;
    let mut desk = gateway_b.live(&admin, 1_000_000).await;
    for socket in [&mut room_a, &mut room_b, &mut desk] {
        subscribe(socket, &topic, 0).await;
    }
    let both = {
        let mut ids = vec![learner_id.clone(), classmate_id.clone()];
        ids.sort();
        json!(ids)
    };
    let seen = frame_where(&mut desk, Duration::from_secs(10), |f| {
        f["topic"] == topic.as_str() && f["presence"]["online"] == 2
    })
    .await
    .expect("presence of both learners, across gateways");
    assert_eq!(seen["presence"]["learnerIds"], both);
    for gateway in [&gateway_a, &gateway_b] {
        let (status, presence) = gateway
            .call(
                Method::GET,
                &format!("/v1/courses/{course_id}/presence"),
                Some(&classmate),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{presence}");
        assert_eq!(presence["online"], 2, "{presence}");
        assert_eq!(presence["learnerIds"], json!([]), "{presence}");
    }
    let (status, posted) = gateway_a
        .call(
            Method::POST,
            &format!("/v1/courses/{course_id}/announcements"),
            Some(&admin),
            Some(json!({"title": "Across replicas", "body": "Hello, both of you."})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{posted}");
    for socket in [&mut room_a, &mut room_b, &mut desk] {
        let heard = frame_where(socket, Duration::from_secs(5), |f| {
            f["topic"] == topic.as_str() && f["announcement"]["title"] == "Across replicas"
        })
        .await;
        assert!(
            heard.is_some(),
            "the announcement crossed gateways and replicas"
        );
    }
    // Through announcement.v1 on Kafka, it is in the classmate's inbox too, once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, inbox): (StatusCode, Value) = gateway_a
            .call(Method::GET, "/v1/notifications", Some(&classmate), None)
            .await;
        let copies = inbox["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["title"] == "Across replicas")
            .count();
        if copies == 1 {
            break;
        }
        assert!(
            copies == 0 && tokio::time::Instant::now() < deadline,
            "{inbox}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The learner now has three sockets on two gateways, one over the cap of two: the
    // oldest (tab_a, on gateway A) was closed with 4409.
    let closed = loop {
        match next_frame_or_close(&mut tab_a).await {
            Some(code) => break code,
            None => continue,
        }
    };
    assert_eq!(closed, 4409, "the oldest socket is the one closed");
    drop(room_a);
    let seen = frame_where(&mut desk, Duration::from_secs(10), |f| {
        f["topic"] == topic.as_str() && f["presence"]["online"] == 1
    })
    .await
    .expect("presence falls when a learner leaves");
    assert_eq!(seen["presence"]["learnerIds"], json!([classmate_id]));
    drop((room_b, desk));

    // A notification replica restarts under a gateway (on the same address): the gateway
    // reopens its session and replays its sockets and rooms, so an announcement posted
    // meanwhile still reaches the room's socket there, and it still counts as present.
    let mut fixed = notification_settings.clone();
    fixed.push(("DUOVARSITY_GRPC_ADDR", "127.0.0.1:23481".to_string()));
    let notification_c = start(Component::Service("notification"), fixed.clone()).await;
    let gateway_c = start(Component::Gateway, gateway_to(&notification_c)).await;
    let mut watcher = gateway_c.live(&classmate, 1_000_000).await;
    subscribe(&mut watcher, &topic, 0).await;
    frame_where(&mut watcher, Duration::from_secs(10), |f| {
        f["subscribed"]["topic"] == topic.as_str()
    })
    .await
    .expect("subscribed on gateway C");
    notification_c.stop().await;
    let (status, posted) = gateway_a
        .call(
            Method::POST,
            &format!("/v1/courses/{course_id}/announcements"),
            Some(&admin),
            Some(json!({"title": "After the restart", "body": "Still here?"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{posted}");
    let notification_c = start(Component::Service("notification"), fixed).await;
    let heard = frame_where(&mut watcher, Duration::from_secs(20), |f| {
        f["topic"] == topic.as_str() && f["announcement"]["title"] == "After the restart"
    })
    .await;
    assert!(
        heard.is_some(),
        "the gateway resumed its session and the room"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, presence) = gateway_b
            .call(
                Method::GET,
                &format!("/v1/courses/{course_id}/presence"),
                Some(&admin),
                None,
            )
            .await;
        if presence["learnerIds"] == json!([classmate_id]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{presence}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(watcher);
    gateway_c.stop().await;
    notification_c.stop().await;

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

/// The close code of `socket`'s next message if it is a close (1006 when it just ended);
/// None for any other message. Fails after 10 s.
async fn next_frame_or_close(socket: &mut Socket) -> Option<u16> {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        Err(_) => panic!("the socket stayed open"),
        Ok(None) | Ok(Some(Err(_))) => Some(1006),
        Ok(Some(Ok(Message::Close(frame)))) => Some(frame.map_or(1005, |f| u16::from(f.code))),
        Ok(Some(Ok(_))) => None,
    }
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
