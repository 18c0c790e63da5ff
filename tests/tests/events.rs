//! Services publish their events through the outbox: registering, enrolling, finishing a
//! lesson and completing a course each put one typed, keyed, traced envelope on the bus.

use std::time::Duration;

use duovarsity_common::events::{Record, Subscription};
use duovarsity_proto::events::{
    EnrollmentCompleted, Envelope, LessonCompleted, LessonProgressed, UserRegistered,
};
use duovarsity_testkit::{TEST_ADMIN, TestPlatform};
use prost::Message;

async fn next(subscription: &mut Box<dyn Subscription>) -> (Record, Envelope) {
    let record = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("an event within 5 s")
        .unwrap();
    let envelope = Envelope::decode(record.payload.clone()).unwrap();
    (record, envelope)
}

#[tokio::test]
async fn state_changes_publish_their_events() {
    let p = TestPlatform::start_with_admin(duovarsity::Component::All, &[]).await;
    let bus = p.bus();
    let mut users = bus.subscribe("user.v1", "test").await.unwrap();
    let mut progress = bus.subscribe("progress.v1", "test").await.unwrap();
    let mut enrollments = bus.subscribe("enrollment.v1", "test").await.unwrap();

    // The bootstrap admin registered first.
    let (_, admin_event) = next(&mut users).await;
    assert_eq!(admin_event.r#type, "user.registered");
    let (learner_id, learner) = p.sign_up("events@example.com").await;
    let (record, envelope) = next(&mut users).await;
    assert_eq!(
        (record.key.as_str(), envelope.aggregate_id.as_str()),
        (learner_id.as_str(), learner_id.as_str())
    );
    let payload = UserRegistered::decode(envelope.payload.unwrap().value.as_slice()).unwrap();
    assert_eq!(payload.email, "events@example.com");
    assert!(uuid::Uuid::parse_str(&envelope.event_id).is_ok());

    // A one-lesson course, published, enrolled in and finished.
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (course_id, lesson_id) = p.course_with_lesson(&admin, "evented").await;
    p.publish(&admin, &course_id).await;
    p.enroll(&learner, &course_id).await;
    let (_, created) = next(&mut enrollments).await;
    assert_eq!(created.r#type, "enrollment.created");

    for _ in 0..2 {
        p.progress(&learner, &lesson_id, 100).await;
    }
    // Every update is a progress change; only the first that finished the lesson is a
    // completion.
    let mut changes = Vec::new();
    let mut completions = Vec::new();
    while let Ok(Ok(record)) =
        tokio::time::timeout(Duration::from_millis(500), progress.next()).await
    {
        assert_eq!(record.key, learner_id, "progress is keyed by learner");
        let envelope = Envelope::decode(record.payload.clone()).unwrap();
        let payload = envelope.payload.unwrap().value;
        match envelope.r#type.as_str() {
            "progress.lesson_progressed" => {
                changes.push(LessonProgressed::decode(payload.as_slice()).unwrap())
            }
            "progress.lesson_completed" => {
                completions.push(LessonCompleted::decode(payload.as_slice()).unwrap())
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(
        changes
            .iter()
            .all(|c| c.percent == 100 && c.completed && c.lesson_id == lesson_id)
    );
    assert_eq!(
        completions.len(),
        1,
        "recording the finished lesson again is not news"
    );
    assert_eq!(completions[0].lesson_id, lesson_id);
    let (_, completed) = next(&mut enrollments).await;
    assert_eq!(completed.r#type, "enrollment.completed");
    let completed =
        EnrollmentCompleted::decode(completed.payload.unwrap().value.as_slice()).unwrap();
    assert!(completed.certificate_number.starts_with("DV-"));

    // The backbone reports on itself: outbox backlog and age, consumer lag and outcomes.
    let metrics = p.metrics().await;
    for name in [
        "outbox_backlog{",
        "outbox_oldest_age_seconds{",
        "outbox_publish_seconds",
        "events_consumer_lag{",
        "events_consumed_total{",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    p.stop().await;
}

/// The catalog's events, which discovery follows: publishing and editing a course say
/// what it is now, archiving says it left, publishing a lesson's content carries its title
/// and text, deleting a lesson says so; each through its service's outbox, once.
#[tokio::test]
async fn catalog_changes_publish_their_events() {
    use duovarsity_proto::events::{CourseArchived, CourseUpdated, LessonDeleted, LessonPublished};
    let p = TestPlatform::start_with_admin(duovarsity::Component::All, &[]).await;
    let bus = p.bus();
    let mut courses = bus.subscribe("course.v1", "test").await.unwrap();
    let mut lessons = bus.subscribe("lesson.v1", "test").await.unwrap();
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (course_id, ids) = p.course_with_lessons(&admin, "catalog-events", 2).await;
    let text = format!("# Borrowing\n\n{}", "ownership é ".repeat(7_000));
    let (status, body) = p
        .save_draft(&admin, &ids[0], serde_json::json!({"markdown": text}))
        .await;
    assert!(status.is_success(), "{body}");
    let (status, body) = p
        .call(
            reqwest::Method::POST,
            &format!("/v1/lessons/{}/content:publish", ids[0]),
            Some(&admin),
            Some(serde_json::json!({})),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (record, envelope) = next(&mut lessons).await;
    assert_eq!(
        (envelope.r#type.as_str(), record.key.as_str()),
        ("lesson.published", ids[0].as_str())
    );
    let published = LessonPublished::decode(envelope.payload.unwrap().value.as_slice()).unwrap();
    assert_eq!(
        (
            published.course_id.as_str(),
            published.title.as_str(),
            published.version
        ),
        (course_id.as_str(), "Lesson 0", 1)
    );
    // Long text is cut at 64 KiB on a character boundary, and says so.
    assert!(published.truncated);
    assert!(published.markdown.len() <= 64 * 1024 && text.starts_with(&published.markdown));

    // Publishing the course: course.published and the full entry.
    p.publish(&admin, &course_id).await;
    let (_, first) = next(&mut courses).await;
    assert_eq!(first.r#type, "course.published");
    let (_, entry) = next(&mut courses).await;
    assert_eq!(entry.r#type, "course.updated");
    let entry = CourseUpdated::decode(entry.payload.unwrap().value.as_slice()).unwrap();
    assert_eq!(
        (entry.title.as_str(), entry.status.as_str()),
        ("catalog-events", "published")
    );

    // An edit says what the course is after it.
    let (status, body) = p
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/courses/{course_id}"),
            Some(&admin),
            Some(serde_json::json!({"title": "Ownership in depth", "tags": ["rust", "memory"]})),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (_, edited) = next(&mut courses).await;
    let edited = CourseUpdated::decode(edited.payload.unwrap().value.as_slice()).unwrap();
    assert_eq!(edited.title, "Ownership in depth");
    assert_eq!(edited.tags, ["rust", "memory"]);
    assert_eq!(
        (edited.slug.as_str(), edited.status.as_str()),
        ("catalog-events", "published")
    );

    // Deleting a lesson, then archiving the course (twice: one event).
    let (status, _) = p
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/lessons/{}", ids[1]),
            Some(&admin),
            None,
        )
        .await;
    assert!(status.is_success());
    let (_, deleted) = next(&mut lessons).await;
    let deleted = LessonDeleted::decode(deleted.payload.unwrap().value.as_slice()).unwrap();
    assert_eq!(
        (deleted.lesson_id.as_str(), deleted.course_id.as_str()),
        (ids[1].as_str(), course_id.as_str())
    );
    for _ in 0..2 {
        let (status, _) = p
            .call(
                reqwest::Method::POST,
                &format!("/v1/courses/{course_id}:archive"),
                Some(&admin),
                Some(serde_json::json!({})),
            )
            .await;
        assert!(status.is_success());
    }
    let (_, archived) = next(&mut courses).await;
    assert_eq!(archived.r#type, "course.archived");
    let archived = CourseArchived::decode(archived.payload.unwrap().value.as_slice()).unwrap();
    assert_eq!(archived.course_id, course_id);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), courses.next())
            .await
            .is_err(),
        "archiving again is not news"
    );
    p.stop().await;
}
