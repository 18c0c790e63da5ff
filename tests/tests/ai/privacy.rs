//! What one learner sends never reaches another through the AI cache, and a task's lesson
//! is checked against the caller's access before anything is answered or served.

use duovarsity::Component;
use duovarsity_testkit::{TEST_ADMIN, TestPlatform};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{Mocks, chat, learner_of_tier, platform};

fn hint(lesson: &str, words: Option<&str>) -> Value {
    let messages = match words {
        Some(words) => json!([{"role": "user", "content": words}]),
        None => json!([]),
    };
    json!({"model": "hint", "messages": messages,
           "task": {"kind": "hint", "lesson_id": lesson, "exercise_id": "ex-1", "hint_level": 1}})
}

fn text(body: &Value) -> String {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

const ADA: &str = "ADA-SECRET my code is while(true){}";
const BOB: &str = "BOB-SECRET my password is hunter2";

/// Two learners, the same task, their own words: each answer is theirs alone. Asked with
/// no words, the task's shared answer holds neither's.
async fn two_learners(p: &TestPlatform) -> (String, String, String) {
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (course, lesson) = p.course_with_lesson(&admin, "privacy-course").await;
    p.publish(&admin, &course).await;
    let ada = learner_of_tier(p, "ada-ai@example.com", "TIER_FREE").await;
    let bob = learner_of_tier(p, "bob-ai@example.com", "TIER_FREE").await;
    for _ in 0..2 {
        for (token, own, other) in [(&ada, ADA, "BOB-SECRET"), (&bob, BOB, "ADA-SECRET")] {
            let (status, _, _, body) = chat(p, token, hint(&lesson, Some(own))).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(!body.to_string().contains(other), "{body}");
        }
    }
    let (status, _, first, shared) = chat(p, &ada, hint(&lesson, None)).await;
    assert_eq!(
        (status, first.as_str()),
        (StatusCode::OK, "miss"),
        "{shared}"
    );
    let (_, _, second, again) = chat(p, &bob, hint(&lesson, None)).await;
    assert_eq!(second, "hit", "{again}");
    assert_eq!(text(&shared), text(&again));
    for body in [&shared, &again] {
        let body = body.to_string();
        assert!(
            !body.contains("ADA-SECRET") && !body.contains("BOB-SECRET"),
            "{body}"
        );
    }
    (ada, bob, lesson)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_model_never_repeats_one_learners_words_to_another() {
    let p = TestPlatform::start_with_admin(Component::All, &[]).await;
    let (ada, _, lesson) = two_learners(&p).await;
    // The sandbox echoes the question: the learner's own words come back to them (so the
    // assertions above would catch a leak), from their private cache entry the second time.
    let (_, _, cache, body) = chat(&p, &ada, hint(&lesson, Some(ADA))).await;
    assert_eq!(cache, "hit", "{body}");
    assert!(text(&body).contains("ADA-SECRET"), "{body}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_sees_each_learners_words_only_in_their_own_requests() {
    let mocks = Mocks::start().await;
    let p = platform(&mocks.file, &[]).await;
    two_learners(&p).await;
    let requests = mocks.primary.requests();
    // Each learner's words once (the second ask was a private hit), the shared hint once.
    assert_eq!(requests.len(), 3, "{requests:?}");
    let with = |marker: &str| {
        requests
            .iter()
            .filter(|r| r.to_string().contains(marker))
            .count()
    };
    assert_eq!((with("ADA-SECRET"), with("BOB-SECRET")), (1, 1));
    assert!(
        requests.iter().all(
            |r| !(r.to_string().contains("ADA-SECRET") && r.to_string().contains("BOB-SECRET"))
        )
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_must_name_a_lesson_the_caller_may_read() {
    let p = TestPlatform::start_with_admin(Component::All, &[]).await;
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (_, paid_lesson) = p
        .paid_course_with_lesson(&admin, "ai-paid-course", 4900, "INR")
        .await;
    let learner = learner_of_tier(&p, "curious@example.com", "TIER_FREE").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let (status, _, _, body) = chat(&p, &learner, hint(&unknown, Some("hello"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, _, body) = chat(&p, &learner, hint("lesson-7", None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["field"], "task.lesson_id", "{body}");
    // The owner may ask (and so fills the shared cache)...
    let (status, _, _, body) = chat(&p, &admin, hint(&paid_lesson, None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // ... but a learner who has not bought the course gets neither a new answer nor the
    // cached one.
    for words in [None, Some("what does the paid lesson say?")] {
        let (status, _, _, body) = chat(&p, &learner, hint(&paid_lesson, words)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["reason"], "LESSON_NOT_ACCESSIBLE", "{body}");
    }
    // No messages and no lesson: nothing to answer.
    let (status, _, _, body) = chat(&p, &learner, json!({"model": "hint", "messages": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    p.stop().await;
}
