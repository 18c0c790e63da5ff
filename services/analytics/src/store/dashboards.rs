//! Reads of the instructor and admin dashboards: per-day aggregates by index range, distinct
//! counts of active learners, the lesson funnel and completion times.

use duovarsity_common::Error;
use duovarsity_common::db::Database;
use sqlx::Row;

use super::each;

/// (title, instructor id) of a published course.
pub async fn course(db: &Database, id: &str) -> Result<Option<(String, String)>, Error> {
    let row =
        sqlx::query("SELECT title, instructor_id FROM analytics_courses WHERE course_id = $1")
            .bind(id)
            .fetch_optional(db.reader())
            .await?;
    Ok(row
        .map(|r| -> Result<_, sqlx::Error> {
            Ok((r.try_get("title")?, r.try_get("instructor_id")?))
        })
        .transpose()?)
}

/// A course's days in [from, to]: (day, enrollments, completions, AI hint requests).
pub async fn course_days(
    db: &Database,
    course: &str,
    from: &str,
    to: &str,
) -> Result<Vec<(String, [i64; 3])>, Error> {
    let rows = sqlx::query(
        "SELECT day, enrollments, completions, ai_hint_requests FROM analytics_course_days \
         WHERE course_id = $1 AND day >= $2 AND day <= $3 ORDER BY day",
    )
    .bind(course)
    .bind(from)
    .bind(to)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |r| {
        Ok((
            r.try_get("day")?,
            [
                r.try_get("enrollments")?,
                r.try_get("completions")?,
                r.try_get("ai_hint_requests")?,
            ],
        ))
    })
}

/// Distinct learners active in a course per day of [from, to].
pub async fn course_active_per_day(
    db: &Database,
    course: &str,
    from: &str,
    to: &str,
) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query(
        "SELECT day, COUNT(*) AS n FROM analytics_course_active \
         WHERE course_id = $1 AND day >= $2 AND day <= $3 GROUP BY day ORDER BY day",
    )
    .bind(course)
    .bind(from)
    .bind(to)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |r| Ok((r.try_get("day")?, r.try_get("n")?)))
}

/// Distinct learners active in a course (or, with `course` None, on the platform) in
/// [from, to].
pub async fn distinct_active(
    db: &Database,
    course: Option<&str>,
    from: &str,
    to: &str,
) -> Result<i64, Error> {
    let row = match course {
        Some(course) => {
            sqlx::query(
                "SELECT COUNT(DISTINCT learner_id) AS n FROM analytics_course_active \
                 WHERE course_id = $1 AND day >= $2 AND day <= $3",
            )
            .bind(course)
            .bind(from)
            .bind(to)
            .fetch_one(db.reader())
            .await?
        }
        None => {
            sqlx::query(
                "SELECT COUNT(DISTINCT learner_id) AS n FROM analytics_active_days \
                 WHERE day >= $1 AND day <= $2",
            )
            .bind(from)
            .bind(to)
            .fetch_one(db.reader())
            .await?
        }
    };
    Ok(row.try_get("n")?)
}

/// One lesson of the funnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunnelRow {
    pub lesson_id: String,
    pub title: String,
    pub started: i64,
    pub completed: i64,
    pub stopped_here: i64,
    pub ai_hint_requests: i64,
}

/// Every lesson of a course that learners touched or asked about, most started first.
pub async fn funnel(db: &Database, course: &str) -> Result<Vec<FunnelRow>, Error> {
    let rows = sqlx::query(
        "SELECT c.lesson_id, c.title, c.ai_hint_requests, \
           (SELECT COUNT(*) FROM analytics_lessons l \
              WHERE l.course_id = c.course_id AND l.lesson_id = c.lesson_id) AS started, \
           (SELECT COUNT(*) FROM analytics_lessons l \
              WHERE l.course_id = c.course_id AND l.lesson_id = c.lesson_id \
              AND l.completed_at IS NOT NULL) AS completed \
         FROM analytics_course_lessons c WHERE c.course_id = $1",
    )
    .bind(course)
    .fetch_all(db.reader())
    .await?;
    let mut lessons: Vec<FunnelRow> = rows
        .iter()
        .map(|r| {
            Ok(FunnelRow {
                lesson_id: r.try_get("lesson_id")?,
                title: r.try_get("title")?,
                started: r.try_get("started")?,
                completed: r.try_get("completed")?,
                stopped_here: 0,
                ai_hint_requests: r.try_get("ai_hint_requests")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    // Where each learner who has not completed the course was last seen.
    let stops = sqlx::query(
        "SELECT l.lesson_id, COUNT(*) AS n FROM analytics_lessons l \
         WHERE l.course_id = $1 \
           AND l.last_at = (SELECT MAX(m.last_at) FROM analytics_lessons m \
                             WHERE m.course_id = l.course_id AND m.learner_id = l.learner_id) \
           AND NOT EXISTS (SELECT 1 FROM analytics_enrollments e WHERE e.course_id = l.course_id \
                             AND e.learner_id = l.learner_id AND e.completed_at IS NOT NULL) \
         GROUP BY l.lesson_id",
    )
    .bind(course)
    .fetch_all(db.reader())
    .await?;
    for row in stops {
        let lesson: String = row.try_get("lesson_id")?;
        let count: i64 = row.try_get("n")?;
        if let Some(entry) = lessons.iter_mut().find(|l| l.lesson_id == lesson) {
            entry.stopped_here = count;
        }
    }
    lessons.sort_by(|a, b| {
        b.started
            .cmp(&a.started)
            .then_with(|| a.lesson_id.cmp(&b.lesson_id))
    });
    Ok(lessons)
}

/// Milliseconds from enrollment to completion of the completions in [from_ms, to_ms).
pub async fn completion_times(
    db: &Database,
    course: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<i64>, Error> {
    let rows = sqlx::query(
        "SELECT completed_at - enrolled_at AS took FROM analytics_enrollments \
         WHERE course_id = $1 AND completed_at >= $2 AND completed_at < $3 AND enrolled_at IS NOT NULL",
    )
    .bind(course)
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |r| r.try_get("took"))
}

/// Revenue rows (day, currency, captured, refunded) of a course (or every course) in [from, to].
pub async fn revenue(
    db: &Database,
    course: Option<&str>,
    from: &str,
    to: &str,
) -> Result<Vec<(String, String, i64, i64)>, Error> {
    let rows = match course {
        Some(course) => {
            sqlx::query(
                "SELECT day, currency, captured_minor AS captured, refunded_minor AS refunded \
                 FROM analytics_revenue_days WHERE course_id = $1 AND day >= $2 AND day <= $3 \
                 ORDER BY day, currency",
            )
            .bind(course)
            .bind(from)
            .bind(to)
            .fetch_all(db.reader())
            .await?
        }
        None => {
            sqlx::query(
                "SELECT day, currency, CAST(SUM(captured_minor) AS BIGINT) AS captured, \
                 CAST(SUM(refunded_minor) AS BIGINT) AS refunded FROM analytics_revenue_days \
                 WHERE day >= $1 AND day <= $2 GROUP BY day, currency ORDER BY day, currency",
            )
            .bind(from)
            .bind(to)
            .fetch_all(db.reader())
            .await?
        }
    };
    each(&rows, |r| {
        Ok((
            r.try_get("day")?,
            r.try_get("currency")?,
            r.try_get("captured")?,
            r.try_get("refunded")?,
        ))
    })
}

/// The platform's days in [from, to]: (day, [new accounts, enrollments, completions, AI
/// requests, AI cost]).
pub async fn platform_days(
    db: &Database,
    from: &str,
    to: &str,
) -> Result<Vec<(String, [i64; 5])>, Error> {
    let rows = sqlx::query(
        "SELECT day, new_accounts, enrollments, completions, ai_requests, ai_cost_nano_usd \
         FROM analytics_platform_days WHERE day >= $1 AND day <= $2 ORDER BY day",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |r| {
        Ok((
            r.try_get("day")?,
            [
                r.try_get("new_accounts")?,
                r.try_get("enrollments")?,
                r.try_get("completions")?,
                r.try_get("ai_requests")?,
                r.try_get("ai_cost_nano_usd")?,
            ],
        ))
    })
}
