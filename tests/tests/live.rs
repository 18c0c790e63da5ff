//! Live notifications over WebSocket through the gateway, with a real WebSocket client:
//! every connection of a user gets each new notification, other users get nothing, a
//! reconnect resumes after the last sequence number, and a bad token is refused at the
//! upgrade.

use std::time::Duration;

use duovarsity_testkit::{TEST_ADMIN, TestPlatform, next_frame};
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
    let bad = p
        .url("/v1/ws?access_token=not-a-token")
        .replacen("http://", "ws://", 1);
    match tokio_tungstenite::connect_async(bad).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let none = p.url("/v1/ws").replacen("http://", "ws://", 1);
    assert!(tokio_tungstenite::connect_async(none).await.is_err());
    p.stop().await;
}
