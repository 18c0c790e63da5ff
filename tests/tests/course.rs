//! The learning domain through REST: authoring, the catalog, enrollment, progress and
//! certificates, on the embedded platform.

use duovarsity_testkit::{TEST_ADMIN as ADMIN, TestPlatform};
use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn platform() -> TestPlatform {
    TestPlatform::start_with_admin(duovarsity::Component::All, &[]).await
}

/// An instructor's (id, token): signed up, promoted by the admin, signed in again.
async fn instructor(p: &TestPlatform, email: &str) -> (String, String) {
    let (id, _) = p.sign_up(email).await;
    let (_, admin) = p.sign_in(ADMIN).await;
    let (status, body) = p
        .call(
            Method::POST,
            &format!("/v1/users/{id}:setRole"),
            Some(&admin),
            Some(json!({"role": "ROLE_INSTRUCTOR"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    p.sign_in(email).await
}

/// A course with one section and `lessons` required lessons; returns (course id, lesson ids).
async fn course_with_lessons(
    p: &TestPlatform,
    token: &str,
    slug: &str,
    lessons: usize,
    price: Option<Value>,
) -> (String, Vec<String>) {
    let mut course = json!({"slug": slug, "title": format!("Course {slug}"), "summary": "Learn things", "level": "LEVEL_BEGINNER", "language": "en", "tags": ["rust"]});
    if let Some(price) = price {
        course["price"] = price;
    }
    let (status, created) = p
        .call(Method::POST, "/v1/courses", Some(token), Some(course))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (status, section) = p
        .call(
            Method::POST,
            &format!("/v1/courses/{id}/sections"),
            Some(token),
            Some(json!({"title": "Basics"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{section}");
    let section_id = section["id"].as_str().unwrap().to_string();
    let mut lesson_ids = Vec::new();
    for n in 0..lessons {
        let (status, lesson) = p
            .call(
                Method::POST,
                &format!("/v1/sections/{section_id}/lessons"),
                Some(token),
                Some(json!({"title": format!("Lesson {n}"), "kind": "LESSON_KIND_TEXT", "estimatedMinutes": 5, "required": true})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{lesson}");
        lesson_ids.push(lesson["id"].as_str().unwrap().to_string());
    }
    (id, lesson_ids)
}

/// The status each caller (None: anonymous) gets for the same call, in order.
async fn statuses(
    p: &TestPlatform,
    method: &Method,
    path: &str,
    body: Option<Value>,
    callers: &[Option<&str>],
) -> Vec<StatusCode> {
    let mut out = Vec::with_capacity(callers.len());
    for caller in callers {
        out.push(p.call(method.clone(), path, *caller, body.clone()).await.0);
    }
    out
}

async fn publish(p: &TestPlatform, token: &str, id: &str) {
    let (status, body) = p
        .call(
            Method::POST,
            &format!("/v1/courses/{id}:publish"),
            Some(token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "COURSE_STATUS_PUBLISHED");
}

#[tokio::test]
async fn every_mutating_method_checks_who_is_calling() {
    let p = platform().await;
    let (_, owner) = instructor(&p, "owner@example.com").await;
    let (_, other) = instructor(&p, "other@example.com").await;
    let (_, learner) = p.sign_up("learner@example.com").await;
    let (_, admin) = p.sign_in(ADMIN).await;
    let (course, lessons) = course_with_lessons(&p, &owner, "matrix", 1, None).await;
    let outline = p
        .call(
            Method::GET,
            &format!("/v1/courses/{course}"),
            Some(&owner),
            None,
        )
        .await
        .1;
    let section = outline["sections"][0]["id"].as_str().unwrap().to_string();
    let lesson = lessons[0].clone();

    // (method, path, body) for every mutating authoring method.
    let calls: Vec<(Method, String, Value)> = vec![
        (
            Method::PATCH,
            format!("/v1/courses/{course}"),
            json!({"title": "Renamed"}),
        ),
        (
            Method::PUT,
            format!("/v1/courses/{course}/prerequisites"),
            json!({"prerequisiteIds": []}),
        ),
        (
            Method::POST,
            format!("/v1/courses/{course}/sections:reorder"),
            json!({"sectionIds": [section]}),
        ),
        (
            Method::POST,
            format!("/v1/sections/{section}/lessons:reorder"),
            json!({"lessonIds": [lesson]}),
        ),
        (
            Method::PATCH,
            format!("/v1/sections/{section}"),
            json!({"title": "Basics 2"}),
        ),
        (
            Method::POST,
            format!("/v1/courses/{course}/sections"),
            json!({"title": "More"}),
        ),
        (
            Method::POST,
            format!("/v1/sections/{section}/lessons"),
            json!({"title": "Extra", "kind": "LESSON_KIND_QUIZ"}),
        ),
        (
            Method::PATCH,
            format!("/v1/lessons/{lesson}"),
            json!({"estimatedMinutes": 7}),
        ),
        (
            Method::GET,
            format!("/v1/courses/{course}/stats"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/v1/courses/{course}:publish"),
            json!({}),
        ),
    ];
    let everyone = [
        None,
        Some(learner.as_str()),
        Some(other.as_str()),
        Some(owner.as_str()),
        Some(admin.as_str()),
    ];
    for (method, path, body) in &calls {
        let body = (!body.is_null()).then(|| body.clone());
        assert_eq!(
            statuses(&p, method, path, body, &everyone).await,
            [
                StatusCode::UNAUTHORIZED,
                StatusCode::FORBIDDEN,
                StatusCode::FORBIDDEN,
                StatusCode::OK,
                StatusCode::OK
            ],
            "{method} {path}"
        );
    }
    // The writes took effect (the owner's and then the admin's rename).
    let (_, outline) = p
        .call(
            Method::GET,
            &format!("/v1/courses/{course}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(outline["course"]["title"], "Renamed");
    assert_eq!(outline["sections"][0]["title"], "Basics 2");
    assert_eq!(outline["sections"].as_array().unwrap().len(), 3);

    // Deletes last (they remove what the others use), and archive.
    for (method, path) in [
        (Method::DELETE, format!("/v1/lessons/{lesson}")),
        (Method::DELETE, format!("/v1/sections/{section}")),
        (Method::POST, format!("/v1/courses/{course}:archive")),
    ] {
        let body = (method == Method::POST).then(|| json!({}));
        assert_eq!(
            statuses(&p, &method, &path, body, &everyone[..4]).await,
            [
                StatusCode::UNAUTHORIZED,
                StatusCode::FORBIDDEN,
                StatusCode::FORBIDDEN,
                StatusCode::OK
            ],
            "{path}"
        );
    }
    // Learners cannot create courses; anonymous callers cannot enroll or record progress.
    let create =
        json!({"slug": "nope", "title": "Nope", "level": "LEVEL_BEGINNER", "language": "en"});
    assert_eq!(
        p.call(
            Method::POST,
            "/v1/courses",
            Some(&learner),
            Some(create.clone())
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        p.call(Method::POST, "/v1/courses", None, Some(create))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        p.call(
            Method::POST,
            &format!("/v1/courses/{course}/enrollments"),
            None,
            Some(json!({}))
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    p.stop().await;
}

#[tokio::test]
async fn drafts_are_private_publishing_needs_a_lesson_and_archived_courses_stay_readable_for_learners()
 {
    let p = platform().await;
    let (_, owner) = instructor(&p, "owner@example.com").await;
    let (_, learner) = p.sign_up("learner@example.com").await;
    let (empty, _) = course_with_lessons(&p, &owner, "empty-course", 0, None).await;
    let (status, problem) = p
        .call(
            Method::POST,
            &format!("/v1/courses/{empty}:publish"),
            Some(&owner),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["reason"], "COURSE_EMPTY");

    let (course, _) = course_with_lessons(&p, &owner, "visible-later", 1, None).await;
    assert_eq!(
        p.call(Method::GET, &format!("/v1/courses/{course}"), None, None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        p.call(
            Method::GET,
            "/v1/courses/visible-later",
            Some(&learner),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        p.call(Method::GET, "/v1/courses/visible-later", Some(&owner), None)
            .await
            .0,
        StatusCode::OK
    );
    publish(&p, &owner, &course).await;
    let (status, outline) = p
        .call(Method::GET, "/v1/courses/visible-later", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{outline}");
    assert_eq!(outline["sections"][0]["lessons"][0]["title"], "Lesson 0");

    let (status, enrollment) = p
        .call(
            Method::POST,
            &format!("/v1/courses/{course}/enrollments"),
            Some(&learner),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{enrollment}");
    assert_eq!(enrollment["status"], "ENROLLMENT_STATUS_ACTIVE");
    p.call(
        Method::POST,
        &format!("/v1/courses/{course}:archive"),
        Some(&owner),
        Some(json!({})),
    )
    .await;
    let (_, late) = p.sign_up("late@example.com").await;
    let (status, problem) = p
        .call(
            Method::POST,
            &format!("/v1/courses/{course}/enrollments"),
            Some(&late),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, problem["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("COURSE_ARCHIVED"))
    );
    assert_eq!(
        p.call(
            Method::GET,
            &format!("/v1/courses/{course}"),
            Some(&learner),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        p.call(
            Method::GET,
            &format!("/v1/courses/{course}"),
            Some(&late),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    p.stop().await;
}

#[tokio::test]
async fn progress_is_idempotent_monotonic_and_completes_with_a_verifiable_certificate() {
    let p = platform().await;
    let (_, owner) = instructor(&p, "owner@example.com").await;
    let (course, lessons) = course_with_lessons(&p, &owner, "progress", 3, None).await;
    publish(&p, &owner, &course).await;
    let (_, learner) = p.sign_up("learner@example.com").await;
    let (_, stranger) = p.sign_up("stranger@example.com").await;

    let (status, problem) = p
        .call(
            Method::PUT,
            &format!("/v1/lessons/{}/progress", lessons[0]),
            Some(&learner),
            Some(json!({"percent": 10})),
        )
        .await;
    assert_eq!(
        (status, problem["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("NOT_ENROLLED"))
    );
    p.call(
        Method::POST,
        &format!("/v1/courses/{course}/enrollments"),
        Some(&learner),
        Some(json!({})),
    )
    .await;

    let record = |lesson: String, percent: i32, position: i32| {
        let learner = learner.clone();
        let p = &p;
        async move {
            p.call(
                Method::PUT,
                &format!("/v1/lessons/{lesson}/progress"),
                Some(&learner),
                Some(json!({"percent": percent, "positionSeconds": position})),
            )
            .await
        }
    };
    let (_, first) = record(lessons[0].clone(), 60, 120).await;
    assert_eq!(first["progress"]["percent"], 60);
    // Lower values never move progress back; the same call twice changes nothing.
    let (_, lower) = record(lessons[0].clone(), 20, 30).await;
    assert_eq!(
        (
            lower["progress"]["percent"].as_i64(),
            lower["progress"]["positionSeconds"].as_i64()
        ),
        (Some(60), Some(120))
    );
    let (_, again) = record(lessons[0].clone(), 60, 120).await;
    assert_eq!(again["progress"]["percent"], 60);
    let (status, problem) = record(lessons[0].clone(), 101, 0).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["errors"][0]["field"], "percent");

    // Many parallel writers on one lesson: the final state is the maximum, nothing lost.
    let writers = (1..=40).map(|n| record(lessons[1].clone(), n * 2, n * 10));
    for (status, body) in futures::future::join_all(writers).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, progress) = p
        .call(
            Method::GET,
            &format!("/v1/courses/{course}/progress"),
            Some(&learner),
            None,
        )
        .await;
    let lesson1 = progress["lessons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["lessonId"] == lessons[1].as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (
            lesson1["percent"].as_i64(),
            lesson1["positionSeconds"].as_i64()
        ),
        (Some(80), Some(400))
    );
    assert_eq!(progress["enrollment"]["status"], "ENROLLMENT_STATUS_ACTIVE");

    // Completing every required lesson (in parallel) completes the enrollment exactly once.
    let finishers = lessons.iter().map(|l| record(l.clone(), 100, 0));
    futures::future::join_all(finishers).await;
    let (_, progress) = p
        .call(
            Method::GET,
            &format!("/v1/courses/{course}/progress"),
            Some(&learner),
            None,
        )
        .await;
    assert_eq!(
        progress["enrollment"]["status"], "ENROLLMENT_STATUS_COMPLETED",
        "{progress}"
    );
    assert_eq!(progress["completedRequiredLessons"], 3);
    let number = progress["enrollment"]["certificateNumber"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(number.starts_with("DV-"), "{number}");

    // Anyone can verify it; nobody else can read the learner's progress.
    let (status, certificate) = p
        .call(
            Method::GET,
            &format!("/v1/certificates/{number}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{certificate}");
    assert_eq!(certificate["courseTitle"], "Course progress");
    assert_eq!(
        p.call(
            Method::GET,
            "/v1/certificates/DV-0000-0000-0000",
            None,
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        p.call(
            Method::GET,
            &format!("/v1/courses/{course}/progress"),
            Some(&stranger),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );

    let (_, stats) = p
        .call(
            Method::GET,
            &format!("/v1/courses/{course}/stats"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(
        (
            stats["completed"].as_str(),
            stats["completionRate"].as_f64()
        ),
        (Some("1"), Some(1.0))
    );
    p.stop().await;
}

#[tokio::test]
async fn prerequisites_and_paid_courses_gate_enrollment() {
    let p = platform().await;
    let (_, owner) = instructor(&p, "owner@example.com").await;
    let (intro, intro_lessons) = course_with_lessons(&p, &owner, "intro", 1, None).await;
    let (advanced, _) = course_with_lessons(&p, &owner, "advanced", 1, None).await;
    publish(&p, &owner, &intro).await;
    publish(&p, &owner, &advanced).await;
    let (status, body) = p
        .call(
            Method::PUT,
            &format!("/v1/courses/{advanced}/prerequisites"),
            Some(&owner),
            Some(json!({"prerequisiteIds": [intro]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = p
        .call(
            Method::PUT,
            &format!("/v1/courses/{advanced}/prerequisites"),
            Some(&owner),
            Some(json!({"prerequisiteIds": [advanced]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, learner) = p.sign_up("learner@example.com").await;
    let (status, problem) = p
        .call(
            Method::POST,
            &format!("/v1/courses/{advanced}/enrollments"),
            Some(&learner),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, problem["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("PREREQUISITE_MISSING"))
    );
    assert!(
        problem["detail"].as_str().unwrap().contains(&intro),
        "{problem}"
    );

    p.call(
        Method::POST,
        &format!("/v1/courses/{intro}/enrollments"),
        Some(&learner),
        Some(json!({})),
    )
    .await;
    p.call(
        Method::PUT,
        &format!("/v1/lessons/{}/progress", intro_lessons[0]),
        Some(&learner),
        Some(json!({"percent": 100})),
    )
    .await;
    let (status, enrollment) = p
        .call(
            Method::POST,
            &format!("/v1/courses/{advanced}/enrollments"),
            Some(&learner),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{enrollment}");

    let (paid, _) = course_with_lessons(
        &p,
        &owner,
        "paid",
        1,
        Some(json!({"currency": "EUR", "amountMinor": "4900"})),
    )
    .await;
    publish(&p, &owner, &paid).await;
    let (_, pending) = p
        .call(
            Method::POST,
            &format!("/v1/courses/{paid}/enrollments"),
            Some(&learner),
            Some(json!({})),
        )
        .await;
    assert_eq!(pending["status"], "ENROLLMENT_STATUS_PENDING_PAYMENT");
    let (status, bad) = p.call(Method::POST, "/v1/courses", Some(&owner), Some(json!({"slug": "bad-price", "title": "X", "level": "LEVEL_BEGINNER", "language": "en", "price": {"currency": "euro", "amountMinor": "-1"}}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    let (_, mine) = p
        .call(Method::GET, "/v1/me/enrollments", Some(&learner), None)
        .await;
    assert_eq!(mine["enrollments"].as_array().unwrap().len(), 3);
    p.stop().await;
}

#[tokio::test]
async fn the_catalog_filters_and_pages_stably_under_inserts() {
    let p = platform().await;
    let (owner_id, owner) = instructor(&p, "owner@example.com").await;
    for n in 0..7 {
        let (id, _) = course_with_lessons(
            &p,
            &owner,
            &format!("catalog-{n}"),
            1,
            (n % 2 == 1).then(|| json!({"currency": "USD", "amountMinor": "1000"})),
        )
        .await;
        publish(&p, &owner, &id).await;
    }
    let (status, free) = p
        .call(
            Method::GET,
            "/v1/courses?price=PRICE_FILTER_FREE&tag=rust&language=en",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{free}");
    assert_eq!(free["courses"].as_array().unwrap().len(), 4);
    let (_, found) = p
        .call(Method::GET, "/v1/courses?query=CATALOG-3", None, None)
        .await;
    assert_eq!(found["courses"].as_array().unwrap().len(), 1);
    let (_, by_owner) = p
        .call(
            Method::GET,
            &format!("/v1/courses?instructorId={owner_id}&pageSize=100"),
            None,
            None,
        )
        .await;
    assert_eq!(by_owner["courses"].as_array().unwrap().len(), 7);

    // Page through while new courses are published: every course that existed at the start
    // is seen exactly once.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut inserted = 0;
    loop {
        let (status, page) = p
            .call(
                Method::GET,
                &format!("/v1/courses?pageSize=2&pageToken={token}"),
                None,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for course in page["courses"].as_array().unwrap() {
            seen.push(course["slug"].as_str().unwrap().to_string());
        }
        if inserted < 2 {
            let (id, _) =
                course_with_lessons(&p, &owner, &format!("late-{inserted}"), 1, None).await;
            publish(&p, &owner, &id).await;
            inserted += 1;
        }
        token = page["nextPageToken"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    let mut expected: Vec<String> = (0..7).map(|n| format!("catalog-{n}")).collect();
    expected.reverse();
    assert_eq!(seen, expected);
    p.stop().await;
}

/// Slugs resolve through a cache; renaming one drops the old name at once.
#[tokio::test]
async fn a_renamed_slug_resolves_and_the_old_one_is_gone() {
    let p = platform().await;
    let (_, teacher) = instructor(&p, "slugs@example.com").await;
    let (id, _) = course_with_lessons(&p, &teacher, "old-name", 1, None).await;
    publish(&p, &teacher, &id).await;
    for _ in 0..2 {
        let (status, body) = p
            .call(Method::GET, "/v1/courses/old-name", None, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["course"]["id"], id.as_str());
    }
    let (status, body) = p
        .call(
            Method::PATCH,
            &format!("/v1/courses/{id}"),
            Some(&teacher),
            Some(json!({"slug": "new-name"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = p
        .call(Method::GET, "/v1/courses/old-name", None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = p
        .call(Method::GET, "/v1/courses/new-name", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["course"]["id"], id.as_str());
    // A new course may take the freed name.
    let (other, _) = course_with_lessons(&p, &teacher, "old-name", 1, None).await;
    publish(&p, &teacher, &other).await;
    let (_, body) = p
        .call(Method::GET, "/v1/courses/old-name", None, None)
        .await;
    assert_eq!(body["course"]["id"], other.as_str());
    p.stop().await;
}
