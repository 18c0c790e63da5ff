//! The analytics service on a running platform: a learner's journey to XP, streak and rank
//! through REST with the access rules of every route (`journey`), leaderboard ranks against
//! a brute-force ranking of the database through Redis going down and being rebuilt
//! (`ranks`), and the real event path through Kafka (`kafka`).

mod journey;
mod kafka;
mod ranks;

use std::time::{Duration, Instant};

use duovarsity_testkit::{TEST_PASSWORD, TestPlatform};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Registers `name` (display name `name`, email `<name>@example.com`); (id, token).
pub async fn learner(p: &TestPlatform, name: &str) -> (String, String) {
    let email = format!("{}@example.com", name.to_lowercase().replace(' ', "."));
    let body = json!({"email": email, "password": TEST_PASSWORD, "displayName": name});
    let (status, created) = p
        .call(Method::POST, "/v1/auth/register", None, Some(body))
        .await;
    assert!(status.is_success(), "register {name}: {created}");
    p.sign_in(&email).await
}

/// A new instructor account; (id, token with the instructor role).
pub async fn instructor(p: &TestPlatform, admin: &str, name: &str) -> (String, String) {
    let (id, _) = learner(p, name).await;
    let (status, user) = p
        .call(
            Method::POST,
            &format!("/v1/users/{id}:setRole"),
            Some(admin),
            Some(json!({"role": "ROLE_INSTRUCTOR"})),
        )
        .await;
    assert!(status.is_success(), "{user}");
    let email = format!("{}@example.com", name.to_lowercase().replace(' ', "."));
    p.sign_in(&email).await
}

/// A published course of `count` lessons owned by the holder of `token`; (course, lessons).
pub async fn course_with_lessons(
    p: &TestPlatform,
    token: &str,
    slug: &str,
    count: usize,
) -> (String, Vec<String>) {
    let (course_id, lessons) = p.course_with_lessons(token, slug, count).await;
    p.publish(token, &course_id).await;
    (course_id, lessons)
}

/// GETs `path` as the holder of `token` until `done` holds of the answer (within 15 s).
pub async fn until(
    p: &TestPlatform,
    token: &str,
    path: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = p.call(Method::GET, path, Some(token), None).await;
        if status == StatusCode::OK && done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never got there; last answer {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The learner's XP today, once `/v1/me/activity` says `xp`.
pub async fn xp_becomes(p: &TestPlatform, token: &str, xp: i64) -> Value {
    until(p, token, "/v1/me/activity", |a| {
        a["todayXp"].as_str() == Some(xp.to_string().as_str())
    })
    .await
}

/// Completes a lesson as the holder of `token`.
pub async fn complete(p: &TestPlatform, token: &str, lesson: &str) {
    let (status, body) = p.progress(token, lesson, 100).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
