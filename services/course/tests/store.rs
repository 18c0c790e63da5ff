//! The course store's contract, run against SQLite and PostgreSQL.

use std::sync::Arc;

use duovarsity_common::db::Database;
use duovarsity_common::events::{Event, EventBus, PendingEvent, pending_event};
use duovarsity_course::store::ProgressEvents;
use duovarsity_course::store::{
    self, CatalogFilter, CoursePatch, CourseRow, CourseStore, EnrollmentRow, LessonRow,
    Reorderable, SectionRow,
};
use duovarsity_proto::events::{
    EnrollmentCompleted, EnrollmentCreated, LessonCompleted, LessonProgressed,
};

fn course(slug: &str, published_at: Option<i64>, price: Option<(&str, i64)>) -> CourseRow {
    CourseRow {
        id: uuid::Uuid::now_v7().to_string(),
        slug: slug.into(),
        title: format!("Title {slug}"),
        summary: "A summary about Rust".into(),
        level: "beginner".into(),
        language: "en".into(),
        price: price.map(|(c, a)| (c.to_string(), a)),
        status: if published_at.is_some() {
            "published"
        } else {
            "draft"
        }
        .into(),
        instructor_id: "instructor-1".into(),
        created_at: 1,
        updated_at: 1,
        published_at,
        tags: vec!["rust".into(), "systems".into()],
        prerequisite_ids: Vec::new(),
    }
}

/// An event of type `E` on the test's own topic.
fn event<E: Event>() -> PendingEvent {
    let mut event = pending_event("aggregate", &E::default());
    event.record.topic = TOPIC.into();
    event
}

const TOPIC: &str = "test.v1";

fn progress_events() -> ProgressEvents {
    ProgressEvents {
        progressed: Box::new(|_| event::<LessonProgressed>()),
        lesson_completed: event::<LessonCompleted>(),
        course_completed: event::<EnrollmentCompleted>(),
    }
}

/// How many events of each type the store wrote to its outbox (published through a relay).
async fn outbox_types(store: &CourseStore) -> std::collections::HashMap<String, usize> {
    let (bus, _bus_dir) = duovarsity_testkit::embedded_bus(1).await;
    let bus = Arc::new(bus);
    let mut subscription = bus.subscribe(TOPIC, "count").await.unwrap();
    let relay = store.outbox().relay(store.database().clone(), bus.clone());
    let mut published = 0;
    loop {
        match relay.publish_batch().await.unwrap() {
            0 => break,
            batch => published += batch,
        }
    }
    // Exactly what the relay published, no waiting for "nothing more".
    let mut counts = std::collections::HashMap::new();
    for _ in 0..published {
        let record = subscription.next().await.unwrap();
        let kind = record
            .headers
            .iter()
            .find(|(k, _)| k == "event_type")
            .unwrap()
            .1
            .clone();
        *counts.entry(kind).or_insert(0) += 1;
    }
    counts
}

async fn open(url: &str) -> Arc<CourseStore> {
    let db = Database::connect(url, None, 8).await.unwrap();
    db.migrate(&store::migrations()).await.unwrap();
    Arc::new(CourseStore::new(db))
}

async fn suite(store: Arc<CourseStore>) {
    // Courses, slugs and patches.
    let a = course("alpha", Some(100), None);
    store.insert_course(&a).await.unwrap();
    assert!(
        store
            .insert_course(&course("alpha", None, None))
            .await
            .is_err(),
        "slugs are unique"
    );
    assert_eq!(store.course("alpha").await.unwrap().unwrap().id, a.id);
    store
        .update_course(
            &a.id,
            &CoursePatch {
                title: Some("Alpha Rust".into()),
                tags: Some(vec!["web".into()]),
                price: Some(Some(("EUR".into(), 990))),
                ..Default::default()
            },
            5,
            &event::<duovarsity_proto::events::CourseUpdated>(),
        )
        .await
        .unwrap();
    let updated = store.course(&a.id).await.unwrap().unwrap();
    assert_eq!(
        (
            updated.title.as_str(),
            updated.tags.clone(),
            updated.price.clone()
        ),
        (
            "Alpha Rust",
            vec!["web".to_string()],
            Some(("EUR".to_string(), 990))
        )
    );

    // Outline order and reordering.
    let mut sections = Vec::new();
    for title in ["one", "two", "three"] {
        let section = SectionRow {
            id: uuid::Uuid::now_v7().to_string(),
            course_id: a.id.clone(),
            title: title.into(),
            position: 0,
        };
        store.insert_section(&section).await.unwrap();
        sections.push(section.id);
    }
    let lesson = LessonRow {
        id: uuid::Uuid::now_v7().to_string(),
        section_id: sections[0].clone(),
        course_id: a.id.clone(),
        title: "L".into(),
        kind: "text".into(),
        estimated_minutes: 5,
        required: true,
        position: 0,
    };
    store.insert_lesson(&lesson).await.unwrap();
    let optional = LessonRow {
        id: uuid::Uuid::now_v7().to_string(),
        required: false,
        ..lesson.clone()
    };
    store.insert_lesson(&optional).await.unwrap();
    let reversed: Vec<String> = sections.iter().rev().cloned().collect();
    store
        .reorder(Reorderable::Sections, &reversed)
        .await
        .unwrap();
    let outline = store.outline(&a.id).await.unwrap();
    let titles: Vec<&str> = outline.iter().map(|(s, _)| s.title.as_str()).collect();
    assert_eq!(titles, ["three", "two", "one"]);
    assert_eq!(outline[2].1.len(), 2);
    assert!(outline[2].1[0].required && !outline[2].1[1].required);

    // Catalog filters and keyset order.
    store
        .insert_course(&course("beta", Some(200), Some(("USD", 100))))
        .await
        .unwrap();
    store
        .insert_course(&course("gamma", Some(200), None))
        .await
        .unwrap();
    store
        .insert_course(&course("draft-only", None, None))
        .await
        .unwrap();
    let all = store
        .list_published(&CatalogFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(all.len(), 3, "drafts are not listed");
    assert!(all[0].published_at >= all[1].published_at);
    let free = store
        .list_published(
            &CatalogFilter {
                free: Some(true),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        free.iter().map(|c| c.slug.as_str()).collect::<Vec<_>>(),
        ["gamma"]
    );
    let tagged = store
        .list_published(
            &CatalogFilter {
                tag: "web".into(),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(tagged.len(), 1);
    let text = store
        .list_published(
            &CatalogFilter {
                query: "alpha rust".into(),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(text.len(), 1);
    let first = store
        .list_published(&CatalogFilter::default(), None, 1)
        .await
        .unwrap();
    let cursor = (first[0].published_at.unwrap(), first[0].id.clone());
    let rest = store
        .list_published(&CatalogFilter::default(), Some(&cursor), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert!(!rest.iter().any(|c| c.id == first[0].id));

    // Enrollment, monotonic progress, one completion under concurrency.
    let enrollment = EnrollmentRow {
        id: uuid::Uuid::now_v7().to_string(),
        course_id: a.id.clone(),
        learner_id: "learner-1".into(),
        status: "active".into(),
        enrolled_at: 1,
        completed_at: None,
        certificate_number: None,
    };
    let stored = store
        .enroll(&enrollment, &event::<EnrollmentCreated>())
        .await
        .unwrap();
    assert_eq!(
        store
            .enroll(
                &EnrollmentRow {
                    id: "other-id".into(),
                    ..enrollment.clone()
                },
                &event::<EnrollmentCreated>()
            )
            .await
            .unwrap()
            .id,
        stored.id,
        "enrolling twice keeps the first"
    );
    let outcome = store
        .record_progress(
            &stored,
            &lesson,
            70,
            300,
            10,
            "DV-A",
            "Alpha",
            &progress_events(),
        )
        .await
        .unwrap();
    assert_eq!(
        (outcome.progress.percent, outcome.just_completed),
        (70, false)
    );
    let outcome = store
        .record_progress(
            &stored,
            &lesson,
            30,
            10,
            11,
            "DV-B",
            "Alpha",
            &progress_events(),
        )
        .await
        .unwrap();
    assert_eq!(
        (outcome.progress.percent, outcome.progress.position_seconds),
        (70, 300)
    );
    let racers = (0..6).map(|n| {
        let store = store.clone();
        let stored = stored.clone();
        let lesson = lesson.clone();
        tokio::spawn(async move {
            store
                .record_progress(
                    &stored,
                    &lesson,
                    100,
                    0,
                    20,
                    &format!("DV-RACE-{n}"),
                    "Alpha",
                    &progress_events(),
                )
                .await
                .unwrap()
        })
    });
    let outcomes: Vec<_> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| o.just_completed).count(),
        1,
        "exactly one call completes the course"
    );
    let completed = store.enrollment(&a.id, "learner-1").await.unwrap().unwrap();
    assert_eq!(completed.status, "completed");
    let number = completed.certificate_number.unwrap();
    assert_eq!(
        store
            .certificate(&number)
            .await
            .unwrap()
            .unwrap()
            .course_title,
        "Alpha"
    );
    assert_eq!(store.enrollment_counts(&a.id).await.unwrap().completed, 1);
    assert_eq!(
        store
            .completed_among("learner-1", &[a.id.clone(), "nope".into()])
            .await
            .unwrap(),
        vec![a.id.clone()]
    );

    // The outbox holds exactly the news: one enrollment (enrolling twice is not news), the
    // lesson completed once, the course completed once despite six racing calls.
    let types = outbox_types(&store).await;
    assert_eq!(types.get("enrollment.created"), Some(&1), "{types:?}");
    assert_eq!(
        types.get("progress.lesson_completed"),
        Some(&1),
        "{types:?}"
    );
    assert_eq!(types.get("enrollment.completed"), Some(&1), "{types:?}");
    assert_eq!(
        types.get("course.updated"),
        Some(&1),
        "the patch's event: {types:?}"
    );
}

duovarsity_testkit::on_sqlite_and_postgres!(
    |url: String| async move { suite(open(&url).await).await }
);
