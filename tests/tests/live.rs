//! Live notifications and course rooms over WebSocket through the gateway, with a real
//! WebSocket client: every connection of a user gets each new notification, other users
//! get nothing, a reconnect resumes after the last sequence number, a bad token is refused
//! at the upgrade, and a course room reaches exactly who may be in it.

use std::time::Duration;

use duovarsity_testkit::{
    Socket, TEST_ADMIN, TestPlatform, frame_where, next_frame, refused, subscribe,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn notifications_arrive_live_on_every_connection_of_their_user() {
    let p = TestPlatform::start_with_admin(duovarsity::Component::All, &[]).await;
    let (_, learner) = p.sign_up("live@example.com").await;
    let (_, other) = p.sign_up("quiet@example.com").await;

    // Two tabs of the learner and one of another user; each catches up with its welcome.
    let mut tab_a = p.live(&learner, 0).await;
    let mut tab_b = p.live(&learner, 0).await;
    let mut theirs = p.live(&other, 0).await;
    let welcome = next_frame(&mut tab_a, Duration::from_secs(5))
        .await
        .expect("the welcome");
    assert_eq!(welcome["notification"]["title"], "Welcome to Duovarsity");
    let welcome_seq: i64 = welcome["notification"]["seq"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        next_frame(&mut tab_b, Duration::from_secs(5))
            .await
            .unwrap()["notification"]["title"],
        "Welcome to Duovarsity"
    );
    assert_eq!(
        next_frame(&mut theirs, Duration::from_secs(5))
            .await
            .unwrap()["notification"]["title"],
        "Welcome to Duovarsity"
    );

    // Something new for the learner reaches both tabs within a second, and nobody else.
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (course_id, lesson_id) = p.course_with_lesson(&admin, "live-course").await;
    p.publish(&admin, &course_id).await;
    p.enroll(&learner, &course_id).await;
    for tab in [&mut tab_a, &mut tab_b] {
        let frame = next_frame(tab, Duration::from_secs(1))
            .await
            .expect("live within a second");
        assert_eq!(frame["notification"]["title"], "Enrollment confirmed");
    }
    assert!(
        next_frame(&mut theirs, Duration::from_millis(500))
            .await
            .is_none(),
        "another user's notification leaked"
    );

    // Lesson progress reaches both tabs as it changes, with the stored state.
    let (status, _) = p
        .call(
            Method::PUT,
            &format!("/v1/lessons/{lesson_id}/progress"),
            Some(&learner),
            Some(serde_json::json!({"percent": 40, "positionSeconds": 75})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    for tab in [&mut tab_a, &mut tab_b] {
        let frame = next_frame(tab, Duration::from_secs(1))
            .await
            .expect("progress within a second");
        assert_eq!(frame["progress"]["lessonId"], lesson_id.as_str(), "{frame}");
        assert_eq!(frame["progress"]["courseId"], course_id.as_str());
        assert_eq!(frame["progress"]["percent"], 40);
        assert_eq!(frame["progress"]["positionSeconds"], 75);
        assert_eq!(frame["progress"]["completed"], false);
    }
    assert!(
        next_frame(&mut theirs, Duration::from_millis(300))
            .await
            .is_none(),
        "another user's progress leaked"
    );

    // The `live-progress` flag turned off for this course: no progress frames, while the
    // progress is still saved; removed, frames come again.
    let off_here = serde_json::json!({
        "state": "ENABLED",
        "variants": {"on": true, "off": false},
        "defaultVariant": "on",
        "targeting": {"if": [{"==": [{"var": "courseId"}, course_id.as_str()]}, "off"]}
    });
    let (status, body) = p
        .call(
            Method::PUT,
            "/v1/admin/flags/live-progress",
            Some(&admin),
            Some(off_here),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let progress_path = format!("/v1/lessons/{lesson_id}/progress");
    let progress = |percent: u32| {
        p.call(
            Method::PUT,
            &progress_path,
            Some(&learner),
            Some(serde_json::json!({"percent": percent, "positionSeconds": 80})),
        )
    };
    assert_eq!(progress(50).await.0, reqwest::StatusCode::OK);
    assert!(
        next_frame(&mut tab_a, Duration::from_millis(500))
            .await
            .is_none(),
        "a progress frame with live-progress off"
    );
    let (status, _) = p
        .call(
            Method::DELETE,
            "/v1/admin/flags/live-progress",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(progress(60).await.0, reqwest::StatusCode::OK);
    let frame = next_frame(&mut tab_a, Duration::from_secs(1))
        .await
        .expect("progress again once the flag is removed");
    assert_eq!(frame["progress"]["percent"], 60, "{frame}");

    // Presence: two connections now; the learner may ask, another learner may not.
    let (_, me) = p
        .call(Method::GET, "/v1/users/me", Some(&learner), None)
        .await;
    let learner_id = me["id"].as_str().unwrap().to_string();
    let (_, presence) = p
        .call(
            Method::GET,
            &format!("/v1/users/{learner_id}/presence"),
            Some(&learner),
            None,
        )
        .await;
    assert_eq!(
        (
            presence["online"].as_bool(),
            presence["connections"].as_i64()
        ),
        (Some(true), Some(2)),
        "{presence}"
    );
    assert_eq!(
        p.call(
            Method::GET,
            &format!("/v1/users/{learner_id}/presence"),
            Some(&other),
            None
        )
        .await
        .0,
        reqwest::StatusCode::FORBIDDEN
    );

    // A reconnect that says what it saw gets only what it missed, once.
    drop(tab_b);
    let mut resumed = p.live(&learner, welcome_seq).await;
    let missed = next_frame(&mut resumed, Duration::from_secs(2))
        .await
        .expect("the missed notification");
    assert_eq!(missed["notification"]["title"], "Enrollment confirmed");
    assert!(
        next_frame(&mut resumed, Duration::from_millis(500))
            .await
            .is_none(),
        "nothing twice"
    );

    // Bad and missing tokens are refused before the upgrade.
    assert_eq!(
        refused(&p.live_url("access_token=not-a-token")).await.0,
        401
    );
    assert!(
        tokio_tungstenite::connect_async(p.live_url(""))
            .await
            .is_err()
    );
    p.stop().await;
}

/// A client that stops reading is cut off (4408, lagging) once its mailbox is full, while
/// a reading client of the same user gets everything; an expired token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected() {
    let p = TestPlatform::start().await;
    let (learner_id, learner) = p.sign_up("slow@example.com").await;

    // The slow tab: a tiny receive window, and it never reads after the upgrade.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(2048).unwrap();
    let stream = tcp
        .connect(
            p.url("/")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    let url = p.live_url(&format!("access_token={learner}"));
    let (mut slow, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let mut reader = p.live(&learner, 0).await;
    // Sockets register with the notification service just after the upgrade.
    p.wait_for_connections(
        &learner,
        &learner_id,
        2,
        Duration::from_secs(5),
        "two sockets",
    )
    .await;

    // Sixty large notifications (about 3 MB): far more than the slow tab's buffers hold.
    let bus = p.bus();
    for n in 0..60 {
        let event = duovarsity_common::events::pending_event(
            &learner_id,
            &duovarsity_proto::events::UserRegistered {
                user_id: learner_id.clone(),
                email: "slow@example.com".into(),
                display_name: format!("{n} {}", "x".repeat(50_000)),
                time_zone: "UTC".into(),
            },
        );
        bus.publish(event.record).await.unwrap();
    }

    // The reading tab gets the welcome and all sixty.
    let mut received = 0;
    while received < 61 {
        next_frame(&mut reader, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("the reading tab stalled after {received} frames"));
        received += 1;
    }
    // The slow tab is dropped by the gateway: presence falls to the reading tab alone.
    p.wait_for_connections(
        &learner,
        &learner_id,
        1,
        Duration::from_secs(20),
        "the slow tab is still connected",
    )
    .await;
    // What it had buffered drains, then the socket ends instead of carrying the rest.
    let mut frames = 0;
    let mut last_seq = 0;
    while let Some(frame) = next_frame(&mut slow, Duration::from_secs(5)).await {
        assert!(frame["notification"].is_object());
        last_seq = frame["notification"]["seq"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        frames += 1;
    }
    assert!(
        frames < 61,
        "the slow tab got everything ({frames}): it was not cut off"
    );
    // Reconnecting after the last one it read, it gets the rest, in order, once.
    let mut resumed = p.live(&learner, last_seq).await;
    let mut seqs = Vec::new();
    while let Some(frame) = next_frame(&mut resumed, Duration::from_secs(2)).await {
        seqs.push(
            frame["notification"]["seq"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap(),
        );
    }
    assert_eq!(seqs, ((last_seq + 1)..=61).collect::<Vec<_>>());

    // An expired token (signed with the platform's own key) is refused at the upgrade.
    let ring = std::sync::Arc::new(
        duovarsity_common::auth::KeyRing::load(&p.data_dir().join("keys"), false).unwrap(),
    );
    let issuer = duovarsity_common::auth::TokenIssuer::new(ring, Duration::from_secs(900));
    let fresh = issuer.issue(&learner_id, "learner", "free").unwrap();
    let (status, _) = p
        .call(Method::GET, "/v1/users/me", Some(&fresh), None)
        .await;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "a token minted here is accepted"
    );
    let now = duovarsity_common::auth::unix_now();
    let claims = duovarsity_common::auth::Claims {
        sub: learner_id.clone(),
        role: "learner".into(),
        tier: "free".into(),
        iss: duovarsity_common::auth::ISSUER.into(),
        iat: now - 3600,
        exp: now - 1800,
        jti: uuid::Uuid::now_v7().to_string(),
    };
    let expired = issuer.sign(&claims).unwrap();
    let (status, _) = refused(&p.live_url(&format!("access_token={expired}"))).await;
    assert_eq!(status, 401, "an expired token");
    p.stop().await;
}

/// One user's live sockets are capped: a new tab is never the one refused; the user's
/// oldest socket is closed with 4409 instead, and another user is not affected.
#[tokio::test]
async fn live_connections_per_user_close_the_oldest() {
    let p = TestPlatform::start_with(
        duovarsity::Component::All,
        &[("DUOVARSITY_LIVE_CONNECTIONS_PER_USER", "2")],
    )
    .await;
    let (learner_id, learner) = p.sign_up("many-tabs@example.com").await;
    let (_, other) = p.sign_up("one-tab@example.com").await;
    let mut acks = Vec::new();
    let mut first = p.live(&learner, 0).await;
    let mut theirs = p.live(&other, 0).await;
    let mut second = p.live(&learner, 0).await;
    p.wait_for_connections(&learner, &learner_id, 2, Duration::from_secs(5), "two tabs")
        .await;
    // The third tab opens; the first (the oldest) is closed with 4409.
    let mut third = p.live(&learner, 0).await;
    assert_eq!(
        close_code(&mut first, Duration::from_secs(5), &mut acks).await,
        Some(4409),
        "the oldest tab is closed"
    );
    assert_eq!(
        close_code(&mut second, Duration::from_millis(500), &mut acks).await,
        None
    );
    assert_eq!(
        close_code(&mut third, Duration::from_millis(100), &mut acks).await,
        None
    );
    assert_eq!(
        close_code(&mut theirs, Duration::from_millis(100), &mut acks).await,
        None,
        "another user's socket"
    );
    p.wait_for_connections(
        &learner,
        &learner_id,
        2,
        Duration::from_secs(5),
        "capped at two",
    )
    .await;
    // Presence lists when each open socket opened, oldest first.
    let presence = p.user_presence(&learner, &learner_id).await;
    assert_eq!(presence["online"], true, "{presence}");
    let opened = presence["socketsOpenedAt"].as_array().unwrap();
    assert_eq!(opened.len(), 2, "{presence}");
    assert!(opened[0].as_str() <= opened[1].as_str(), "{presence}");
    drop((second, third));
    p.wait_for_connections(
        &learner,
        &learner_id,
        0,
        Duration::from_secs(5),
        "closed tabs",
    )
    .await;
    let presence = p.user_presence(&learner, &learner_id).await;
    assert_eq!(presence["online"], false, "{presence}");
    assert!(presence["lastSeen"].as_str().is_some(), "{presence}");
    p.stop().await;
}

/// Heartbeats: a connection that stops answering pings is closed after three intervals,
/// one that reads (and so answers) stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stops_answering_pings_is_closed() {
    let p = TestPlatform::start_with(
        duovarsity::Component::All,
        &[("DUOVARSITY_LIVE_PING_SECS", "1")],
    )
    .await;
    let (learner_id, learner) = p.sign_up("heartbeat@example.com").await;
    let _silent = p.live(&learner, 0).await; // never read: never answers a ping
    let mut answering = p.live(&learner, 0).await;
    let reader = tokio::spawn(async move {
        // Reading is what makes the client answer pings.
        while next_frame(&mut answering, Duration::from_secs(30))
            .await
            .is_some()
        {}
    });
    // Sockets register with the notification service just after the upgrade.
    p.wait_for_connections(
        &learner,
        &learner_id,
        2,
        Duration::from_secs(5),
        "two sockets",
    )
    .await;

    p.wait_for_connections(
        &learner,
        &learner_id,
        1,
        Duration::from_secs(8),
        "the silent connection is still open 8 s after three 1 s pings",
    )
    .await;
    // The answering one outlives several more deadlines.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(p.connections(&learner, &learner_id).await, 1);
    assert!(!reader.is_finished(), "the answering connection was closed");
    reader.abort();
    p.stop().await;
}

/// The close code the server ends `socket` with (None: still open after `wait`), skipping
/// the frames before it; `ack` collects the `authenticated` answers seen on the way.
async fn close_code(
    socket: &mut duovarsity_testkit::Socket,
    wait: Duration,
    acks: &mut Vec<serde_json::Value>,
) -> Option<u16> {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return None,
            Ok(None) | Ok(Some(Err(_))) => return Some(1006),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Some(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Ok(Some(Ok(Message::Text(text)))) => {
                let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                if frame.get("authenticated").is_some() {
                    acks.push(frame);
                }
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A socket follows its token: it closes with 4401 when the token expires, a fresh token
/// of the same user sent as `{"authenticate": {...}}` keeps it open until that one
/// expires, and another user's token (4403) or a forged one (4401) closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_closes_when_its_token_expires_unless_renewed() {
    use duovarsity_common::auth::{KeyRing, TokenIssuer};
    use futures::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;

    let p = TestPlatform::start().await;
    let (learner, _) = p.sign_up("expiring@example.com").await;
    let (someone_else, _) = p.sign_up("someone-else@example.com").await;
    let ring = std::sync::Arc::new(KeyRing::load(&p.data_dir().join("keys"), false).unwrap());
    let token = |user: &str, secs: u64| {
        TokenIssuer::new(ring.clone(), Duration::from_secs(secs))
            .issue(user, "learner", "free")
            .unwrap()
    };
    let authenticate = |token: String| {
        Message::Text(
            serde_json::json!({"authenticate": {"accessToken": token}})
                .to_string()
                .into(),
        )
    };
    let mut acks = Vec::new();

    // Not renewed: closed when the token expires.
    let started = std::time::Instant::now();
    let mut socket = p.live(&token(&learner, 2), 0).await;
    let code = close_code(&mut socket, Duration::from_secs(8), &mut acks).await;
    assert_eq!(code, Some(4401));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Renewed in time: open past the first token's expiry, closed at the second's.
    let started = std::time::Instant::now();
    let mut socket = p.live(&token(&learner, 2), 0).await;
    socket.send(authenticate(token(&learner, 5))).await.unwrap();
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(3), &mut acks).await,
        None,
        "renewed: still open after the first token expired"
    );
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert!(acks[0]["authenticated"]["expiresAt"].as_u64().is_some());
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(8), &mut acks).await,
        Some(4401)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Another user's token, or one that does not verify.
    let mut socket = p.live(&token(&learner, 60), 0).await;
    socket
        .send(authenticate(token(&someone_else, 60)))
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(5), &mut acks).await,
        Some(4403)
    );
    let mut socket = p.live(&token(&learner, 60), 0).await;
    socket
        .send(authenticate("not-a-token".to_string()))
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(5), &mut acks).await,
        Some(4401)
    );
    p.stop().await;
}

/// Whether `frame` is about `topic` and has `key` (`announcement`, `presence`, ...), or is
/// a `key` frame (`subscribed`, `error`, `unsubscribed`) naming `topic`.
fn about(frame: &Value, topic: &str, key: &str) -> bool {
    (frame["topic"] == topic && frame.get(key).is_some()) || frame[key]["topic"] == topic
}

/// The holder of `token` buys the paid course in the sandbox; returns the order id.
async fn buy(p: &TestPlatform, token: &str, course_id: &str) -> String {
    p.enroll(token, course_id).await;
    let (status, order) = p
        .call(
            Method::POST,
            &format!("/v1/courses/{course_id}/checkout"),
            Some(token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{order}");
    let page = order["payWith"]["razorpay"]["checkoutUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let paid = reqwest::Client::new()
        .post(format!("{page}/pay"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert!(paid.status().is_success());
    wait_for_enrollment(p, token, course_id, "ENROLLMENT_STATUS_ACTIVE").await;
    order["id"].as_str().unwrap().to_string()
}

async fn wait_for_enrollment(p: &TestPlatform, token: &str, course_id: &str, status: &str) {
    let started = std::time::Instant::now();
    loop {
        let (_, enrollment) = p
            .call(
                Method::GET,
                &format!("/v1/courses/{course_id}/enrollment"),
                Some(token),
                None,
            )
            .await;
        if enrollment["status"] == status {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "enrollment {status}: {enrollment}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn announce(
    p: &TestPlatform,
    token: &str,
    course_id: &str,
    title: &str,
) -> (StatusCode, Value) {
    p.call(
        Method::POST,
        &format!("/v1/courses/{course_id}/announcements"),
        Some(token),
        Some(json!({"title": title, "body": format!("{title}: details")})),
    )
    .await
}

async fn room_presence(
    p: &TestPlatform,
    token: Option<&str>,
    course_id: &str,
) -> (StatusCode, Value) {
    p.call(
        Method::GET,
        &format!("/v1/courses/{course_id}/presence"),
        token,
        None,
    )
    .await
}

/// The presence frame of `topic` with `online` learners, within 3 s (frames are
/// debounced to one a second per room).
async fn presence_frame(socket: &mut Socket, topic: &str, online: i64) -> Value {
    frame_where(socket, Duration::from_secs(3), |f| {
        about(f, topic, "presence") && f["presence"]["online"] == online
    })
    .await
    .unwrap_or_else(|| panic!("no presence of {online} in {topic}"))
}

/// A course room: only its enrolled learners, its instructor and admins may be in it;
/// presence says how many learners are there (and who, to the instructor); an
/// announcement reaches the room at once and the learners' inboxes; a reconnecting
/// learner resumes after the last announcement it saw; a learner whose enrollment ends
/// (a refund) is taken out of the room and hears nothing more; hostile topics and too
/// many of them are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_course_room_reaches_exactly_who_may_be_in_it() {
    let p = TestPlatform::start_with_admin(duovarsity::Component::All, &[]).await;
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (teacher_id, _) = p.sign_up("teacher@example.com").await;
    let (status, body) = p
        .call(
            Method::POST,
            &format!("/v1/users/{teacher_id}:setRole"),
            Some(&admin),
            Some(json!({"role": "ROLE_INSTRUCTOR"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, teacher) = p.sign_in("teacher@example.com").await;
    let (course_id, _) = p
        .paid_course_with_lesson(&teacher, "room-course", 4900, "USD")
        .await;
    let topic = format!("course:{course_id}");
    let (learner_id, learner) = p.sign_up("in-the-room@example.com").await;
    let (_, stranger) = p.sign_up("outside@example.com").await;
    let order_id = buy(&p, &learner, &course_id).await;

    // Outsiders and made-up topics are refused with a reason.
    let mut outside = p.live(&stranger, 0).await;
    let unknown = format!("course:{}", uuid::Uuid::now_v7());
    let huge = format!("course:{}", "x".repeat(10_000));
    for (wanted, reason) in [
        (topic.as_str(), "NOT_ENROLLED"),
        (unknown.as_str(), "UNKNOWN_TOPIC"),
        (huge.as_str(), "UNKNOWN_TOPIC"),
        ("lobby", "UNKNOWN_TOPIC"),
        ("user:someone-else", "UNKNOWN_TOPIC"),
    ] {
        subscribe(&mut outside, wanted, 0).await;
        let frame = frame_where(&mut outside, Duration::from_secs(5), |f| {
            about(f, wanted, "error")
        })
        .await
        .unwrap_or_else(|| panic!("no answer to {wanted}"));
        assert_eq!(frame["error"]["reason"], reason, "{wanted}: {frame}");
    }

    // The learner joins and sees how many are present, not who.
    let mut inside = p.live(&learner, 0).await;
    subscribe(&mut inside, &topic, 0).await;
    let joined = frame_where(&mut inside, Duration::from_secs(5), |f| {
        about(f, &topic, "subscribed")
    })
    .await
    .expect("subscribed");
    assert_eq!(joined["subscribed"]["seq"], "0");
    let presence = presence_frame(&mut inside, &topic, 1).await;
    assert_eq!(presence["presence"]["learnerIds"], json!([]), "{presence}");

    // The instructor joins (not counted) and sees who.
    let mut desk = p.live(&teacher, 0).await;
    subscribe(&mut desk, &topic, 0).await;
    let presence = presence_frame(&mut desk, &topic, 1).await;
    assert_eq!(presence["presence"]["learnerIds"], json!([learner_id]));
    let (status, rest) = room_presence(&p, Some(&teacher), &course_id).await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(
        (rest["online"].clone(), rest["learnerIds"].clone()),
        (json!(1), json!([learner_id]))
    );
    let (status, rest) = room_presence(&p, Some(&learner), &course_id).await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(
        (rest["online"].clone(), rest["learnerIds"].clone()),
        (json!(1), json!([]))
    );
    let (status, rest) = room_presence(&p, Some(&stranger), &course_id).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{rest}");
    assert_eq!(
        room_presence(&p, None, &course_id).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Only the instructor (or an admin) announces; the room hears it at once, the
    // learner's inbox too, the outsider nothing.
    for token in [&learner, &stranger] {
        let (status, body) = announce(&p, token, &course_id, "Not yours").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, body) = p
        .call(
            Method::POST,
            &format!("/v1/courses/{course_id}/announcements"),
            Some(&teacher),
            Some(json!({"title": "  ", "body": "blank title"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, posted) = announce(&p, &teacher, &course_id, "Office hours").await;
    assert_eq!(status, StatusCode::OK, "{posted}");
    assert_eq!(posted["seq"], "1");
    let heard = frame_where(&mut inside, Duration::from_secs(2), |f| {
        about(f, &topic, "announcement")
    })
    .await
    .expect("the announcement in the room");
    assert_eq!(heard["announcement"]["title"], "Office hours");
    assert_eq!(heard["announcement"]["authorId"], teacher_id.as_str());
    let inbox = frame_where(&mut inside, Duration::from_secs(5), |f| {
        f["notification"]["title"] == "Office hours"
    })
    .await;
    assert!(inbox.is_some(), "the announcement in the inbox");
    assert!(
        frame_where(&mut outside, Duration::from_millis(700), |f| {
            f.to_string().contains("Office hours")
        })
        .await
        .is_none(),
        "an outsider heard the announcement"
    );

    // The learner goes away; two more announcements; back with the last seq seen, they
    // arrive in order, once.
    drop(inside);
    presence_frame(&mut desk, &topic, 0).await;
    for title in ["Second", "Third"] {
        assert_eq!(
            announce(&p, &teacher, &course_id, title).await.0,
            StatusCode::OK
        );
    }
    let mut inside = p.live(&learner, 0).await;
    subscribe(&mut inside, &topic, 1).await;
    let mut resumed = Vec::new();
    while let Some(frame) = frame_where(&mut inside, Duration::from_secs(1), |f| {
        about(f, &topic, "announcement")
    })
    .await
    {
        resumed.push(frame["announcement"]["title"].as_str().unwrap().to_string());
    }
    assert_eq!(resumed, ["Second", "Third"]);
    presence_frame(&mut desk, &topic, 1).await;

    // The learner is refunded: out of the room, told why, and hears nothing more.
    let (status, refunded) = p
        .call(
            Method::POST,
            &format!("/v1/orders/{order_id}:refund"),
            Some(&learner),
            Some(json!({"reason": "changed my mind"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    let left = frame_where(&mut inside, Duration::from_secs(10), |f| {
        about(f, &topic, "unsubscribed")
    })
    .await
    .expect("taken out of the room");
    assert_eq!(left["unsubscribed"]["reason"], "NOT_ENROLLED");
    presence_frame(&mut desk, &topic, 0).await;
    assert_eq!(
        announce(&p, &teacher, &course_id, "After the refund")
            .await
            .0,
        StatusCode::OK
    );
    assert!(
        frame_where(&mut desk, Duration::from_secs(2), |f| about(
            f,
            &topic,
            "announcement"
        ))
        .await
        .is_some(),
        "the room still hears"
    );
    assert!(
        frame_where(&mut inside, Duration::from_millis(700), |f| {
            f.to_string().contains("After the refund")
        })
        .await
        .is_none(),
        "a refunded learner heard the room"
    );
    subscribe(&mut inside, &topic, 0).await;
    let again = frame_where(&mut inside, Duration::from_secs(5), |f| {
        about(f, &topic, "error")
    })
    .await
    .expect("refused");
    assert_eq!(again["error"]["reason"], "NOT_ENROLLED");

    // At most 16 topics per socket (an admin may be in every room).
    let mut busy = p.live(&admin, 0).await;
    let mut topics = Vec::new();
    for n in 0..17 {
        let (status, course) = p
            .call(
                Method::POST,
                "/v1/courses",
                Some(&admin),
                Some(json!({"slug": format!("room-{n}"), "title": format!("Room {n}"), "level": "LEVEL_BEGINNER", "language": "en"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{course}");
        topics.push(format!("course:{}", course["id"].as_str().unwrap()));
    }
    for topic in &topics {
        subscribe(&mut busy, topic, 0).await;
    }
    let refused = frame_where(&mut busy, Duration::from_secs(5), |f| {
        about(f, &topics[16], "error")
    })
    .await
    .expect("the seventeenth is refused");
    assert_eq!(refused["error"]["reason"], "TOO_MANY_TOPICS");
    // A socket may not flood subscriptions: the budget runs out.
    let mut limited = false;
    for _ in 0..30 {
        subscribe(&mut busy, &topics[0], 0).await;
    }
    while let Some(frame) = next_frame(&mut busy, Duration::from_millis(500)).await {
        limited |= frame["error"]["reason"] == "RATE_LIMITED";
    }
    assert!(limited, "thirty subscriptions at once were all taken");
    p.stop().await;
}

/// Announcements reach every enrolled learner's inbox and email, so a course gets a
/// bounded number per hour (429 `ANNOUNCEMENT_LIMIT` with the time to wait, other
/// courses unaffected), and each is of bounded size.
#[tokio::test]
async fn announcements_are_bounded_in_number_and_size() {
    let p = TestPlatform::start_with_admin(
        duovarsity::Component::All,
        &[("DUOVARSITY_ANNOUNCEMENTS_PER_HOUR", "2")],
    )
    .await;
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (busy, _) = p.course_with_lesson(&admin, "busy-course").await;
    let (quiet, _) = p.course_with_lesson(&admin, "quiet-course").await;
    for n in 0..2 {
        let (status, body) = announce(&p, &admin, &busy, &format!("Note {n}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let response = reqwest::Client::new()
        .post(p.url(&format!("/v1/courses/{busy}/announcements")))
        .bearer_auth(&admin)
        .json(&json!({"title": "One too many", "body": "..."}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&wait), "{wait}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["reason"], "ANNOUNCEMENT_LIMIT", "{problem}");
    assert_eq!(
        announce(&p, &admin, &quiet, "Elsewhere").await.0,
        StatusCode::OK
    );
    for (title, body) in [
        ("x".repeat(201), "ok".to_string()),
        ("ok".to_string(), "x".repeat(5001)),
    ] {
        let (status, answer) = p
            .call(
                Method::POST,
                &format!("/v1/courses/{quiet}/announcements"),
                Some(&admin),
                Some(json!({"title": title, "body": body})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    }
    p.stop().await;
}
