//! Recommendations through REST: "continue" follows progress, "ready for" follows
//! completed prerequisites, "because you took" follows what others took together, a new
//! learner gets what is popular at the beginner level, and nothing the learner already has
//! is ever suggested. Related courses are public, cacheable and follow the catalog.

use std::time::{Duration, Instant};

use duovarsity::Component;
use duovarsity_testkit::{TEST_ADMIN, TestPlatform};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Spec, course, ok};

/// The caller's recommendations once `done` holds of them (within 10 s).
async fn until(p: &TestPlatform, token: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let began = Instant::now();
    loop {
        let (status, answer) = p
            .call(Method::GET, "/v1/me/recommendations", Some(token), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let items = answer["items"].as_array().cloned().unwrap_or_default();
        if done(&items) {
            return items;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "recommendations never got there: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (reason, course title, lesson title) of each item.
fn shown(items: &[Value]) -> Vec<(String, String, String)> {
    items
        .iter()
        .map(|i| {
            (
                i["reason"].as_str().unwrap_or_default().to_string(),
                i["course"]["title"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                i["lessonTitle"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn has(items: &[Value], reason: &str, title: &str) -> bool {
    shown(items)
        .iter()
        .any(|(r, t, _)| r == reason && t == title)
}

fn spec<'a>(
    slug: &'a str,
    title: &'a str,
    level: &'a str,
    lessons: &'a [(&'a str, &'a str)],
) -> Spec<'a> {
    Spec {
        slug,
        title,
        summary: "",
        level,
        language: "en",
        price: 0,
        lessons,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommendations_follow_progress_prerequisites_and_co_enrollment_and_skip_owned_courses() {
    let p = TestPlatform::start_with_admin(Component::All, &[]).await;
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let three = [("One", "first"), ("Two", "second"), ("Three", "third")];
    let (rust, rust_lessons) = course(
        &p,
        &admin,
        &spec("rust", "Rust Basics", "LEVEL_BEGINNER", &three),
    )
    .await;
    let (web, _) = course(
        &p,
        &admin,
        &spec("web", "Web in Rust", "LEVEL_INTERMEDIATE", &three[..1]),
    )
    .await;
    let (sql, _) = course(
        &p,
        &admin,
        &spec("sql", "SQL Basics", "LEVEL_BEGINNER", &three[..1]),
    )
    .await;
    let (cooking, _) = course(
        &p,
        &admin,
        &spec("cooking", "Cooking", "LEVEL_BEGINNER", &three[..1]),
    )
    .await;
    let (art, _) = course(
        &p,
        &admin,
        &spec("art", "Art History", "LEVEL_ADVANCED", &three[..1]),
    )
    .await;
    ok(
        &p,
        &admin,
        Method::PUT,
        &format!("/v1/courses/{web}/prerequisites"),
        json!({"prerequisiteIds": [rust]}),
    )
    .await;

    // Others take Rust with SQL (three of them) and Cooking alone (four): Cooking is more
    // popular, SQL is what Rust learners take.
    for n in 0..3 {
        let (_, other) = p.sign_up(&format!("rust-sql-{n}@example.com")).await;
        p.enroll(&other, &rust).await;
        p.enroll(&other, &sql).await;
    }
    for n in 0..4 {
        let (_, other) = p.sign_up(&format!("cook-{n}@example.com")).await;
        p.enroll(&other, &cooking).await;
        if n < 2 {
            // Two learners are not enough to name a pair in public.
            p.enroll(&other, &art).await;
        }
    }

    // A new learner: what is popular at the beginner level, most learners first.
    let (_, newcomer) = p.sign_up("newcomer@example.com").await;
    let items = until(&p, &newcomer, |items| {
        shown(items)
            .iter()
            .take(3)
            .map(|(_, t, _)| t.as_str())
            .collect::<Vec<_>>()
            == ["Cooking", "Rust Basics", "SQL Basics"]
    })
    .await;
    assert!(
        items.iter().all(|i| i["reason"] == "popular_at_your_level"),
        "{items:?}"
    );
    assert_eq!(items[0]["reasonText"], "Popular with beginner learners");

    // Ada starts Rust: continue with its first lesson; SQL because she took Rust, ranked
    // above the more popular Cooking; never Rust itself.
    let (_, ada) = p.sign_up("ada@example.com").await;
    p.enroll(&ada, &rust).await;
    let items = until(&p, &ada, |items| {
        has(items, "continue", "Rust Basics") && has(items, "because_you_took", "SQL Basics")
    })
    .await;
    let seen = shown(&items);
    assert_eq!(
        seen[0],
        ("continue".into(), "Rust Basics".into(), "One".into()),
        "{seen:?}"
    );
    let sql_at = seen.iter().position(|(_, t, _)| t == "SQL Basics").unwrap();
    let cooking_at = seen.iter().position(|(_, t, _)| t == "Cooking").unwrap();
    assert!(sql_at < cooking_at, "{seen:?}");
    assert_eq!(items[sql_at]["reasonText"], "Because you took Rust Basics");
    assert_eq!(items[sql_at]["becauseCourseId"], rust.as_str());
    assert_eq!(
        seen.iter().filter(|(_, t, _)| t == "Rust Basics").count(),
        1,
        "only to continue: {seen:?}"
    );

    // Progress moves "continue" on; completing the course makes her ready for Web in Rust
    // (its prerequisite), and Rust leaves the list.
    let (status, _) = p.progress(&ada, &rust_lessons[0], 100).await;
    assert_eq!(status, StatusCode::OK);
    until(&p, &ada, |items| {
        shown(items).first().is_some_and(|(_, _, l)| l == "Two")
    })
    .await;
    for lesson in &rust_lessons[1..] {
        p.progress(&ada, lesson, 100).await;
    }
    let items = until(&p, &ada, |items| has(items, "ready_for", "Web in Rust")).await;
    assert!(
        shown(&items).iter().all(|(_, t, _)| t != "Rust Basics"),
        "{items:?}"
    );
    assert_eq!(items[0]["reason"], "ready_for", "ready first: {items:?}");

    // Enrolling in SQL takes it out of the suggestions.
    p.enroll(&ada, &sql).await;
    until(&p, &ada, |items| {
        has(items, "continue", "SQL Basics")
            && shown(items)
                .iter()
                .all(|(r, t, _)| r == "continue" || t != "SQL Basics")
    })
    .await;

    // The route needs a caller, and limits are enforced.
    let (status, _) = p
        .call(Method::GET, "/v1/me/recommendations", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = p
        .call(
            Method::GET,
            "/v1/me/recommendations?limit=51",
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, answer) = p
        .call(
            Method::GET,
            "/v1/me/recommendations?limit=1",
            Some(&newcomer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["items"].as_array().unwrap().len(), 1, "{answer}");

    // Related courses: public and cacheable; SQL is what Rust learners also took.
    let related = reqwest::get(p.url(&format!("/v1/courses/{rust}/related")))
        .await
        .unwrap();
    assert_eq!(related.status(), StatusCode::OK);
    let control = related.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(control.starts_with("public"), "{control}");
    let related: Value = related.json().await.unwrap();
    assert_eq!(
        related["items"][0]["course"]["title"], "SQL Basics",
        "{related}"
    );
    assert_eq!(related["items"][0]["reason"], "taken_together");
    let (_, cooking_related) = p
        .call(
            Method::GET,
            &format!("/v1/courses/{cooking}/related"),
            None,
            None,
        )
        .await;
    assert_eq!(cooking_related["items"], json!([]), "{cooking_related}");
    // Archiving SQL takes it out of Rust's related courses at once (the edge cache too).
    ok(
        &p,
        &admin,
        Method::POST,
        &format!("/v1/courses/{sql}:archive"),
        json!({}),
    )
    .await;
    let began = Instant::now();
    loop {
        let (_, related) = p
            .call(
                Method::GET,
                &format!("/v1/courses/{rust}/related"),
                None,
                None,
            )
            .await;
        if related["items"]
            .as_array()
            .is_none_or(|i| i.iter().all(|i| i["course"]["title"] != "SQL Basics"))
        {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(10), "{related}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = p
        .call(
            Method::GET,
            &format!("/v1/courses/{sql}/related"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = p
        .call(Method::GET, "/v1/courses/not-a-uuid/related", None, None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Both routes are in the OpenAPI document.
    let (_, openapi) = p.call(Method::GET, "/openapi.json", None, None).await;
    for path in ["/v1/me/recommendations", "/v1/courses/{course_id}/related"] {
        assert!(
            openapi["paths"][path]["get"].is_object(),
            "{path} is documented"
        );
    }
    p.stop().await;
}
