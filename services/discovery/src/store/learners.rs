//! What learners hold and finished, and the item-to-item model their enrollments keep:
//! learners per course and per ordered pair of courses, changed only when an enrollment
//! starts or stops holding a course (active or completed), so replays change nothing.

use std::collections::HashMap;

use duovarsity_common::db::Database;
use duovarsity_common::error::Error;
use sqlx::{Any, Row, Transaction};

use super::{each, placeholders};

/// Statuses that hold a course.
pub const HOLDING: [&str; 2] = ["active", "completed"];
/// A learner's courses that pair with a new one, most recent first: a learner who
/// enrolls in everything cannot make one enrollment cost more than this many pair writes.
pub const PAIRED_COURSES: i64 = 50;

/// One enrollment of a learner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentRow {
    pub course_id: String,
    pub status: String,
    pub enrolled_at: i64,
    pub active_at: i64,
}

impl EnrollmentRow {
    pub fn holds(&self) -> bool {
        HOLDING.contains(&self.status.as_str())
    }
}

/// A learner's enrollment in a course became `status` at `event_at`; keeps the model in
/// step. An older change than the one recorded is ignored.
pub async fn put_enrollment(
    tx: &mut Transaction<'_, Any>,
    learner_id: &str,
    course_id: &str,
    status: &str,
    event_at: i64,
) -> Result<(), Error> {
    let current = sqlx::query(
        "SELECT status, event_at FROM discovery_enrollments \
         WHERE learner_id = $1 AND course_id = $2",
    )
    .bind(learner_id)
    .bind(course_id)
    .fetch_optional(&mut **tx)
    .await?;
    let (was, recorded_at) = match &current {
        Some(row) => (
            HOLDING.contains(&row.try_get::<String, _>("status")?.as_str()),
            row.try_get::<i64, _>("event_at")?,
        ),
        None => (false, i64::MIN),
    };
    if recorded_at > event_at {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO discovery_enrollments (learner_id, course_id, status, enrolled_at, \
         active_at, event_at) VALUES ($1, $2, $3, $4, $4, $4) \
         ON CONFLICT (learner_id, course_id) DO UPDATE SET status = excluded.status, \
         event_at = excluded.event_at, \
         active_at = CASE WHEN discovery_enrollments.active_at > excluded.active_at \
         THEN discovery_enrollments.active_at ELSE excluded.active_at END",
    )
    .bind(learner_id)
    .bind(course_id)
    .bind(status)
    .bind(event_at)
    .execute(&mut **tx)
    .await?;
    let holds = HOLDING.contains(&status);
    if was == holds {
        return Ok(());
    }
    let delta: i64 = if holds { 1 } else { -1 };
    let others = sqlx::query(
        "SELECT course_id FROM discovery_enrollments WHERE learner_id = $1 \
         AND status IN ('active', 'completed') AND course_id <> $2 \
         ORDER BY enrolled_at DESC LIMIT $3",
    )
    .bind(learner_id)
    .bind(course_id)
    .bind(PAIRED_COURSES)
    .fetch_all(&mut **tx)
    .await?;
    let others: Vec<String> = each(&others, |row| row.try_get("course_id"))?;
    add_learners(tx, course_id, delta).await?;
    for other in &others {
        add_pair(tx, course_id, other, delta).await?;
        add_pair(tx, other, course_id, delta).await?;
    }
    Ok(())
}

async fn add_learners(
    tx: &mut Transaction<'_, Any>,
    course_id: &str,
    delta: i64,
) -> Result<(), Error> {
    let sql = if delta > 0 {
        "INSERT INTO discovery_course_learners (course_id, learners) VALUES ($1, 1) \
         ON CONFLICT (course_id) DO UPDATE SET learners = discovery_course_learners.learners + 1"
    } else {
        "UPDATE discovery_course_learners SET learners = learners - 1 \
         WHERE course_id = $1 AND learners > 0"
    };
    sqlx::query(sql).bind(course_id).execute(&mut **tx).await?;
    Ok(())
}

async fn add_pair(
    tx: &mut Transaction<'_, Any>,
    course_id: &str,
    other_id: &str,
    delta: i64,
) -> Result<(), Error> {
    if delta > 0 {
        sqlx::query(
            "INSERT INTO discovery_course_pairs (course_id, other_id, learners) \
             VALUES ($1, $2, 1) ON CONFLICT (course_id, other_id) \
             DO UPDATE SET learners = discovery_course_pairs.learners + 1",
        )
        .bind(course_id)
        .bind(other_id)
        .execute(&mut **tx)
        .await?;
    } else {
        sqlx::query(
            "UPDATE discovery_course_pairs SET learners = learners - 1 \
             WHERE course_id = $1 AND other_id = $2 AND learners > 0",
        )
        .bind(course_id)
        .bind(other_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A learner learned in a course at `at` (and, with `lesson`, completed that lesson).
pub async fn learned(
    tx: &mut Transaction<'_, Any>,
    learner_id: &str,
    course_id: &str,
    completed_lesson: Option<&str>,
    at: i64,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE discovery_enrollments SET active_at = $1 \
         WHERE learner_id = $2 AND course_id = $3 AND active_at < $1",
    )
    .bind(at)
    .bind(learner_id)
    .bind(course_id)
    .execute(&mut **tx)
    .await?;
    if let Some(lesson) = completed_lesson {
        sqlx::query(
            "INSERT INTO discovery_completed_lessons (learner_id, lesson_id, course_id) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(learner_id)
        .bind(lesson)
        .bind(course_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The courses `learner_id` holds (active or completed enrollments).
pub async fn owned_courses(db: &Database, learner_id: &str) -> Result<Vec<String>, Error> {
    let rows = sqlx::query(
        "SELECT course_id FROM discovery_enrollments \
         WHERE learner_id = $1 AND status IN ('active', 'completed')",
    )
    .bind(learner_id)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |row| row.try_get("course_id"))
}

/// Every enrollment of a learner, most recently active first.
pub async fn enrollments_of(db: &Database, learner_id: &str) -> Result<Vec<EnrollmentRow>, Error> {
    let rows = sqlx::query(
        "SELECT course_id, status, enrolled_at, active_at FROM discovery_enrollments \
         WHERE learner_id = $1 ORDER BY active_at DESC, course_id",
    )
    .bind(learner_id)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |row| {
        Ok(EnrollmentRow {
            course_id: row.try_get("course_id")?,
            status: row.try_get("status")?,
            enrolled_at: row.try_get("enrolled_at")?,
            active_at: row.try_get("active_at")?,
        })
    })
}

/// Lessons a learner completed in `course_id`.
pub async fn completed_lessons(
    db: &Database,
    learner_id: &str,
    course_id: &str,
) -> Result<Vec<String>, Error> {
    let rows = sqlx::query(
        "SELECT lesson_id FROM discovery_completed_lessons \
         WHERE learner_id = $1 AND course_id = $2",
    )
    .bind(learner_id)
    .bind(course_id)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |row| row.try_get("lesson_id"))
}

/// Learners per course for `courses` (absent: none).
pub async fn learners_of(db: &Database, courses: &[String]) -> Result<HashMap<String, i64>, Error> {
    if courses.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT course_id, learners FROM discovery_course_learners WHERE course_id IN ({})",
        placeholders(1, courses.len())
    );
    let mut query = sqlx::query(&sql);
    for course in courses {
        query = query.bind(course);
    }
    let rows = query.fetch_all(db.reader()).await?;
    Ok(each(&rows, |row| {
        Ok((row.try_get("course_id")?, row.try_get("learners")?))
    })?
    .into_iter()
    .collect())
}

/// The `limit` courses taken most often with `course_id`, with how many learners took both.
pub async fn taken_with(
    db: &Database,
    course_id: &str,
    limit: i64,
) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query(
        "SELECT other_id, learners FROM discovery_course_pairs \
         WHERE course_id = $1 AND learners > 0 ORDER BY learners DESC, other_id LIMIT $2",
    )
    .bind(course_id)
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |row| {
        Ok((row.try_get("other_id")?, row.try_get("learners")?))
    })
}

/// The `limit` courses with the most learners.
pub async fn most_learners(db: &Database, limit: i64) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query(
        "SELECT course_id, learners FROM discovery_course_learners WHERE learners > 0 \
         ORDER BY learners DESC, course_id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |row| {
        Ok((row.try_get("course_id")?, row.try_get("learners")?))
    })
}

/// Courses that require some of `completed`, each with all it requires.
pub async fn requiring(
    db: &Database,
    completed: &[String],
) -> Result<HashMap<String, Vec<String>>, Error> {
    if completed.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT course_id, prerequisite_id FROM discovery_prerequisites WHERE course_id IN \
         (SELECT course_id FROM discovery_prerequisites WHERE prerequisite_id IN ({}))",
        placeholders(1, completed.len())
    );
    let mut query = sqlx::query(&sql);
    for course in completed {
        query = query.bind(course);
    }
    let rows = query.fetch_all(db.reader()).await?;
    let mut required: HashMap<String, Vec<String>> = HashMap::new();
    for (course, prerequisite) in each(&rows, |row| {
        Ok((
            row.try_get::<String, _>("course_id")?,
            row.try_get::<String, _>("prerequisite_id")?,
        ))
    })? {
        required.entry(course).or_default().push(prerequisite);
    }
    Ok(required)
}
