//! The content store on SQLite and PostgreSQL, one suite for both: drafts, versions that
//! never change once published, concurrent publishes that never overwrite one another,
//! and media records.

use duovarsity_common::db::Database;
use duovarsity_content::store::{ContentStore, DraftRow, MediaRow, migrations};

async fn open(url: &str) -> Database {
    let db = Database::connect(url, None, 8).await.unwrap();
    db.migrate(&migrations()).await.unwrap();
    db
}

/// The event a publish writes beside its version.
fn published(
    version: &duovarsity_content::store::VersionRow,
) -> duovarsity_common::events::PendingEvent {
    duovarsity_common::events::pending_event(
        &version.lesson_id,
        &duovarsity_proto::events::LessonPublished {
            lesson_id: version.lesson_id.clone(),
            ..Default::default()
        },
    )
}

fn draft(lesson: &str, markdown: &str, attachments: &[&str]) -> DraftRow {
    DraftRow {
        lesson_id: lesson.into(),
        markdown: markdown.into(),
        attachment_ids: attachments.iter().map(|a| a.to_string()).collect(),
        updated_at: 1,
        updated_by: "teacher".into(),
    }
}

async fn suite(db: Database) {
    let store = std::sync::Arc::new(ContentStore::new(db));
    assert_eq!(store.draft("lesson-1").await.unwrap(), None);
    assert_eq!(store.version("lesson-1", None).await.unwrap(), None);

    // Drafts are saved over, attachments included (none is an empty list).
    store
        .save_draft(&draft("lesson-1", "# One", &["m-1", "m-2"]))
        .await
        .unwrap();
    store
        .save_draft(&draft("lesson-1", "# One, again", &[]))
        .await
        .unwrap();
    let saved = store.draft("lesson-1").await.unwrap().unwrap();
    assert_eq!(saved, draft("lesson-1", "# One, again", &[]));

    // Versions count from 1 per lesson; a published version does not follow the draft.
    let first = store
        .publish(&saved, "course-1", 10, "teacher", published)
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    store
        .save_draft(&draft("lesson-1", "# Two", &["m-3"]))
        .await
        .unwrap();
    let second = store
        .publish(
            &store.draft("lesson-1").await.unwrap().unwrap(),
            "course-1",
            20,
            "teacher",
            published,
        )
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(second.attachment_ids, ["m-3"]);
    assert_eq!(
        store.version("lesson-1", Some(1)).await.unwrap(),
        Some(first)
    );
    assert_eq!(store.version("lesson-1", None).await.unwrap(), Some(second));
    assert_eq!(store.version("lesson-1", Some(3)).await.unwrap(), None);
    let other = draft("lesson-2", "# Other", &[]);
    let other = store
        .publish(&other, "course-1", 30, "teacher", published)
        .await;
    assert_eq!(other.unwrap().version, 1, "numbers are per lesson");

    // Concurrent publishes of one lesson: each that succeeds has a number of its own,
    // and none overwrote another.
    let publishes: Vec<_> = (0..8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let text = format!("# Race {n}");
                store
                    .publish(
                        &draft("lesson-3", &text, &[]),
                        "course-1",
                        n,
                        "teacher",
                        published,
                    )
                    .await
                    .map(|version| (version.version, text))
            })
        })
        .collect();
    let mut won = Vec::new();
    for publish in publishes {
        if let Ok(version) = publish.await.unwrap() {
            won.push(version);
        }
    }
    assert!(!won.is_empty());
    let stored = store.versions("lesson-3").await.unwrap();
    assert_eq!(stored.len(), won.len(), "{won:?}");
    for (number, text) in &won {
        let version = stored.iter().find(|v| v.version == *number).unwrap();
        assert_eq!(&version.markdown, text);
    }

    // Media records read back whole; an id is never reused.
    let media = MediaRow {
        id: "media-1".into(),
        lesson_id: "lesson-1".into(),
        filename: "diagram.png".into(),
        content_type: "image/png".into(),
        size_bytes: 1234,
        sha256: duovarsity_common::digest::sha256_hex(b"png"),
        object_key: "lessons/lesson-1/media-1".into(),
        created_at: 40,
        created_by: "teacher".into(),
    };
    store.insert_media(&media).await.unwrap();
    assert_eq!(store.media("media-1").await.unwrap(), Some(media.clone()));
    assert!(store.insert_media(&media).await.is_err());
    assert_eq!(store.media("media-2").await.unwrap(), None);
}

duovarsity_testkit::on_sqlite_and_postgres!(
    |url: String| async move { suite(open(&url).await).await }
);
