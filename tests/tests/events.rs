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
