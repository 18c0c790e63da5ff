//! The catalog rows: courses and lessons as events (or a reindex) state them, each write
//! guarded by `event_at`, and the change feed replicas follow.

use duovarsity_common::db::Database;
use duovarsity_common::error::Error;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::each;
use crate::catalog::{Changed, CourseEntry, LessonEntry};

const COURSE_COLUMNS: &str = "course_id, slug, title, summary, level, language, tags, \
     price_currency, price_minor, instructor_id, status, prerequisite_ids, changed_at";
const LESSON_COLUMNS: &str = "lesson_id, course_id, title, markdown, version, deleted, changed_at";

fn course(row: &AnyRow) -> Result<Changed<CourseEntry>, sqlx::Error> {
    let tags: String = row.try_get("tags")?;
    let prerequisites: String = row.try_get("prerequisite_ids")?;
    Ok(Changed {
        entry: CourseEntry {
            id: row.try_get("course_id")?,
            slug: row.try_get("slug")?,
            title: row.try_get("title")?,
            summary: row.try_get("summary")?,
            level: row.try_get("level")?,
            language: row.try_get("language")?,
            tags: tags.lines().map(str::to_string).collect(),
            price_currency: row.try_get("price_currency")?,
            price_minor: row.try_get("price_minor")?,
            instructor_id: row.try_get("instructor_id")?,
            status: row.try_get("status")?,
            prerequisite_ids: prerequisites.lines().map(str::to_string).collect(),
        },
        changed_at: row.try_get("changed_at")?,
    })
}

fn lesson(row: &AnyRow) -> Result<Changed<LessonEntry>, sqlx::Error> {
    Ok(Changed {
        entry: LessonEntry {
            id: row.try_get("lesson_id")?,
            course_id: row.try_get("course_id")?,
            title: row.try_get("title")?,
            markdown: row.try_get("markdown")?,
            version: row.try_get("version")?,
            deleted: row.try_get::<i64, _>("deleted")? != 0,
        },
        changed_at: row.try_get("changed_at")?,
    })
}

/// Writes `course` (and its prerequisites) as of `event_at` unless the row holds a newer
/// change.
pub async fn put_course(
    tx: &mut Transaction<'_, Any>,
    course: &CourseEntry,
    event_at: i64,
    now: i64,
) -> Result<(), Error> {
    let written = sqlx::query(
        "INSERT INTO discovery_courses (course_id, slug, title, summary, level, language, tags, \
         price_currency, price_minor, instructor_id, status, prerequisite_ids, event_at, \
         changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (course_id) DO UPDATE SET slug = excluded.slug, title = excluded.title, \
         summary = excluded.summary, level = excluded.level, language = excluded.language, \
         tags = excluded.tags, price_currency = excluded.price_currency, \
         price_minor = excluded.price_minor, instructor_id = excluded.instructor_id, \
         status = excluded.status, prerequisite_ids = excluded.prerequisite_ids, \
         event_at = excluded.event_at, changed_at = excluded.changed_at \
         WHERE discovery_courses.event_at <= excluded.event_at",
    )
    .bind(&course.id)
    .bind(&course.slug)
    .bind(&course.title)
    .bind(&course.summary)
    .bind(&course.level)
    .bind(&course.language)
    .bind(course.tags.join("\n"))
    .bind(&course.price_currency)
    .bind(course.price_minor)
    .bind(&course.instructor_id)
    .bind(&course.status)
    .bind(course.prerequisite_ids.join("\n"))
    .bind(event_at)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if written.rows_affected() == 0 {
        return Ok(());
    }
    sqlx::query("DELETE FROM discovery_prerequisites WHERE course_id = $1")
        .bind(&course.id)
        .execute(&mut **tx)
        .await?;
    for required in &course.prerequisite_ids {
        sqlx::query(
            "INSERT INTO discovery_prerequisites (course_id, prerequisite_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&course.id)
        .bind(required)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Sets a known course's status (archiving) as of `event_at`; a course never seen has
/// nothing to hide.
pub async fn set_course_status(
    tx: &mut Transaction<'_, Any>,
    course_id: &str,
    status: &str,
    event_at: i64,
    now: i64,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE discovery_courses SET status = $1, event_at = $2, changed_at = $3 \
         WHERE course_id = $4 AND event_at <= $2",
    )
    .bind(status)
    .bind(event_at)
    .bind(now)
    .bind(course_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes a lesson's publication or tombstone as of `event_at` unless the row holds a
/// newer change.
pub async fn put_lesson(
    tx: &mut Transaction<'_, Any>,
    lesson: &LessonEntry,
    event_at: i64,
    now: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO discovery_lessons (lesson_id, course_id, title, markdown, version, \
         deleted, event_at, changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (lesson_id) DO UPDATE SET course_id = excluded.course_id, \
         title = excluded.title, markdown = excluded.markdown, version = excluded.version, \
         deleted = excluded.deleted, event_at = excluded.event_at, \
         changed_at = excluded.changed_at \
         WHERE discovery_lessons.event_at <= excluded.event_at",
    )
    .bind(&lesson.id)
    .bind(&lesson.course_id)
    .bind(&lesson.title)
    .bind(&lesson.markdown)
    .bind(lesson.version)
    .bind(i64::from(lesson.deleted))
    .bind(event_at)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Courses the database took at or after `since` (the change feed; read from the primary,
/// which a replica's lag cannot hide rows from).
pub async fn courses_changed_since(
    db: &Database,
    since: i64,
) -> Result<Vec<Changed<CourseEntry>>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COURSE_COLUMNS} FROM discovery_courses WHERE changed_at >= $1"
    ))
    .bind(since)
    .fetch_all(db.writer())
    .await?;
    each(&rows, course)
}

/// Lessons the database took at or after `since`.
pub async fn lessons_changed_since(
    db: &Database,
    since: i64,
) -> Result<Vec<Changed<LessonEntry>>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {LESSON_COLUMNS} FROM discovery_lessons WHERE changed_at >= $1"
    ))
    .bind(since)
    .fetch_all(db.writer())
    .await?;
    each(&rows, lesson)
}

/// The live lessons of a course.
pub async fn lessons_of(db: &Database, course_id: &str) -> Result<Vec<LessonEntry>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {LESSON_COLUMNS} FROM discovery_lessons WHERE course_id = $1 AND deleted = 0"
    ))
    .bind(course_id)
    .fetch_all(db.writer())
    .await?;
    Ok(each(&rows, lesson)?.into_iter().map(|c| c.entry).collect())
}

/// Every course (a replica's index is built from these and [`lessons_after`]).
pub async fn all_courses(db: &Database) -> Result<Vec<Changed<CourseEntry>>, Error> {
    let rows = sqlx::query(&format!("SELECT {COURSE_COLUMNS} FROM discovery_courses"))
        .fetch_all(db.writer())
        .await?;
    each(&rows, course)
}

/// Up to `limit` live lessons with ids after `after`, in id order.
pub async fn lessons_after(
    db: &Database,
    after: &str,
    limit: i64,
) -> Result<Vec<Changed<LessonEntry>>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {LESSON_COLUMNS} FROM discovery_lessons WHERE lesson_id > $1 AND deleted = 0 \
         ORDER BY lesson_id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(db.writer())
    .await?;
    each(&rows, lesson)
}

/// The ids of the courses the database has as published (a reindex marks those the
/// owning service no longer lists `unlisted`).
pub async fn published_course_ids(db: &Database) -> Result<Vec<String>, Error> {
    let rows = sqlx::query("SELECT course_id FROM discovery_courses WHERE status = 'published'")
        .fetch_all(db.writer())
        .await?;
    each(&rows, |row| row.try_get("course_id"))
}
