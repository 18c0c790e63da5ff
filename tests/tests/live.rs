//! Live notifications over WebSocket through the gateway, with a real WebSocket client:
//! every connection of a user gets each new notification, other users get nothing, a
//! reconnect resumes after the last sequence number, and a bad token is refused at the
//! upgrade.

use std::time::Duration;

use duovarsity_testkit::{TEST_ADMIN, TestPlatform, next_frame, refused};
use reqwest::Method;

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

/// A client that stops reading is cut off once a frame cannot be written for 5 s, while
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
    assert_eq!(p.connections(&learner, &learner_id).await, 2);

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
    while let Some(frame) = next_frame(&mut slow, Duration::from_secs(5)).await {
        assert!(frame["notification"].is_object());
        frames += 1;
    }
    assert!(
        frames < 61,
        "the slow tab got everything ({frames}): it was not cut off"
    );

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

/// One user's live connections are capped; the refusal is an HTTP 429 before the upgrade,
/// and closing a connection frees its place.
#[tokio::test]
async fn live_connections_per_user_are_limited() {
    let p = TestPlatform::start_with(
        duovarsity::Component::All,
        &[("DUOVARSITY_LIVE_CONNECTIONS_PER_USER", "2")],
    )
    .await;
    let (_, learner) = p.sign_up("many-tabs@example.com").await;
    let (_, other) = p.sign_up("one-tab@example.com").await;
    let first = p.live(&learner, 0).await;
    let _second = p.live(&learner, 0).await;
    let url = p.live_url(&format!("access_token={learner}"));
    let (status, body) = refused(&url).await;
    assert_eq!(status, 429, "a third connection");
    assert!(body.contains("live connections"), "{body}");
    // Another user is not affected.
    let _theirs = p.live(&other, 0).await;

    // Closing a tab frees its place (once the gateway has noticed).
    drop(first);
    let started = std::time::Instant::now();
    loop {
        if tokio_tungstenite::connect_async(url.as_str()).await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the closed tab still counts after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    assert_eq!(p.connections(&learner, &learner_id).await, 2);

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
