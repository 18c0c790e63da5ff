//! `duovarsity discovery reindex`: the catalog rows replaced by what the owning services
//! list now (the CLI reads them over gRPC). Each row is written as of now, so it wins over
//! any older event still in flight; published courses the owners no longer list become
//! `unlisted` and lessons they no longer have become tombstones. Every replica's follower
//! picks the rows up like any change.

use std::collections::HashSet;

use duovarsity_common::db::Database;
use duovarsity_common::error::Error;
use duovarsity_common::time::now_millis;

use crate::catalog::{CourseEntry, LessonEntry};
use crate::store;

/// Rows written per transaction.
const CHUNK: usize = 500;

/// The catalog as the owning services list it: published courses and the published
/// lessons of each.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub courses: Vec<CourseEntry>,
    pub lessons: Vec<LessonEntry>,
}

/// What a reindex wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reindexed {
    pub courses: usize,
    pub lessons: usize,
    /// Published courses the owners no longer list.
    pub unlisted: usize,
    /// Lessons of listed courses the owners no longer have.
    pub removed_lessons: usize,
}

/// Replaces the catalog rows of `db` with `snapshot`.
pub async fn replace(db: &Database, snapshot: &Snapshot) -> Result<Reindexed, Error> {
    let at = now_millis();
    let listed: HashSet<&str> = snapshot.courses.iter().map(|c| c.id.as_str()).collect();
    let mut report = Reindexed {
        courses: snapshot.courses.len(),
        lessons: snapshot.lessons.len(),
        ..Reindexed::default()
    };
    for chunk in snapshot.courses.chunks(CHUNK) {
        let mut tx = db.writer().begin().await?;
        for course in chunk {
            store::put_course(&mut tx, course, at, at).await?;
        }
        tx.commit().await?;
    }
    let gone: Vec<String> = store::published_course_ids(db)
        .await?
        .into_iter()
        .filter(|id| !listed.contains(id.as_str()))
        .collect();
    report.unlisted = gone.len();
    for chunk in gone.chunks(CHUNK) {
        let mut tx = db.writer().begin().await?;
        for id in chunk {
            store::set_course_status(&mut tx, id, "unlisted", at, at).await?;
        }
        tx.commit().await?;
    }
    for chunk in snapshot.lessons.chunks(CHUNK) {
        let mut tx = db.writer().begin().await?;
        for lesson in chunk {
            store::put_lesson(&mut tx, lesson, at, at).await?;
        }
        tx.commit().await?;
    }
    let kept: HashSet<&str> = snapshot.lessons.iter().map(|l| l.id.as_str()).collect();
    let mut stale = Vec::new();
    for course in &snapshot.courses {
        stale.extend(
            store::lessons_of(db, &course.id)
                .await?
                .into_iter()
                .filter(|l| !kept.contains(l.id.as_str())),
        );
    }
    report.removed_lessons = stale.len();
    for chunk in stale.chunks(CHUNK) {
        let mut tx = db.writer().begin().await?;
        for lesson in chunk {
            let tombstone = LessonEntry {
                title: String::new(),
                markdown: String::new(),
                version: 0,
                deleted: true,
                ..lesson.clone()
            };
            store::put_lesson(&mut tx, &tombstone, at, at).await?;
        }
        tx.commit().await?;
    }
    Ok(report)
}
