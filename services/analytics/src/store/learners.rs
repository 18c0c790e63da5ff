//! Reads of one learner (activity, preferences, export) and of weekly leaderboards (the
//! database side of [`crate::leaderboards`]): more XP first, then the greater learner id,
//! hidden learners left out.

use duovarsity_common::Error;
use duovarsity_common::db::Database;
use sqlx::Row;
use sqlx::any::AnyRow;

use std::collections::HashSet;

use super::changes::EnrollmentRow;
use super::{each, read_in};

/// A learner's row as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learner {
    pub display_name: String,
    pub time_zone: String,
    pub hidden: bool,
    pub daily_goal_xp: i64,
}

pub async fn learner(db: &Database, id: &str) -> Result<Option<Learner>, Error> {
    let row = sqlx::query(
        "SELECT display_name, time_zone, leaderboard_hidden, daily_goal_xp \
         FROM analytics_learners WHERE learner_id = $1",
    )
    .bind(id)
    .fetch_optional(db.reader())
    .await?;
    Ok(row
        .map(|row| -> Result<Learner, sqlx::Error> {
            Ok(Learner {
                display_name: row.try_get("display_name")?,
                time_zone: row.try_get("time_zone")?,
                hidden: row.try_get::<i64, _>("leaderboard_hidden")? != 0,
                daily_goal_xp: row.try_get("daily_goal_xp")?,
            })
        })
        .transpose()?)
}

/// Sets the given preferences (making the learner's row if the events have not yet) and
/// returns the row after.
pub async fn set_preferences(
    db: &Database,
    id: &str,
    hidden: Option<bool>,
    goal: Option<i64>,
) -> Result<Learner, Error> {
    sqlx::query(
        "INSERT INTO analytics_learners (learner_id, display_name, time_zone, registered_at, \
         leaderboard_hidden, daily_goal_xp) VALUES ($1, '', 'UTC', NULL, COALESCE($2, 0), COALESCE($3, 0)) \
         ON CONFLICT (learner_id) DO UPDATE SET \
         leaderboard_hidden = COALESCE($2, analytics_learners.leaderboard_hidden), \
         daily_goal_xp = COALESCE($3, analytics_learners.daily_goal_xp)",
    )
    .bind(id)
    .bind(hidden.map(i64::from))
    .bind(goal)
    .execute(db.writer())
    .await?;
    learner(db, id)
        .await?
        .ok_or_else(|| Error::internal("a learner row", &"missing after its upsert"))
}

/// Which of `ids` are hidden from leaderboards.
pub async fn hidden_among(db: &Database, ids: &[String]) -> Result<HashSet<String>, Error> {
    let sql = "SELECT learner_id FROM analytics_learners WHERE leaderboard_hidden = 1 AND learner_id IN (";
    Ok(read_in(db, sql, ids)
        .await?
        .iter()
        .map(|row| row.try_get("learner_id"))
        .collect::<Result<_, sqlx::Error>>()?)
}

/// Every day with activity: (date, xp, lessons completed, seconds), oldest first.
pub async fn days(db: &Database, id: &str) -> Result<Vec<(String, i64, i64, i64)>, Error> {
    let rows = sqlx::query(
        "SELECT day, xp, lessons_completed, seconds FROM analytics_learner_days \
         WHERE learner_id = $1 ORDER BY day",
    )
    .bind(id)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |r| {
        Ok((
            r.try_get("day")?,
            r.try_get("xp")?,
            r.try_get("lessons_completed")?,
            r.try_get("seconds")?,
        ))
    })
}

/// Every lesson state: (course, lesson, started, completed, position, last).
pub async fn lessons(
    db: &Database,
    id: &str,
) -> Result<Vec<(String, String, i64, Option<i64>, i64, i64)>, Error> {
    let rows = sqlx::query(
        "SELECT course_id, lesson_id, started_at, completed_at, position_seconds, last_at \
         FROM analytics_lessons WHERE learner_id = $1 ORDER BY started_at, lesson_id",
    )
    .bind(id)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |r| {
        Ok((
            r.try_get("course_id")?,
            r.try_get("lesson_id")?,
            r.try_get("started_at")?,
            r.try_get("completed_at")?,
            r.try_get("position_seconds")?,
            r.try_get("last_at")?,
        ))
    })
}

pub async fn enrollments(db: &Database, id: &str) -> Result<Vec<(String, EnrollmentRow)>, Error> {
    let rows = sqlx::query(
        "SELECT course_id, enrolled_at, completed_at, revoked_at FROM analytics_enrollments \
         WHERE learner_id = $1 ORDER BY course_id",
    )
    .bind(id)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |r| {
        Ok((
            r.try_get("course_id")?,
            EnrollmentRow {
                enrolled_at: r.try_get("enrolled_at")?,
                completed_at: r.try_get("completed_at")?,
                revoked_at: r.try_get("revoked_at")?,
            },
        ))
    })
}

/// Whether the learner may see a course's board: enrolled (not revoked).
pub async fn enrolled(db: &Database, course: &str, id: &str) -> Result<bool, Error> {
    let row = sqlx::query(
        "SELECT 1 AS yes FROM analytics_enrollments WHERE course_id = $1 AND learner_id = $2 \
         AND enrolled_at IS NOT NULL AND revoked_at IS NULL",
    )
    .bind(course)
    .bind(id)
    .fetch_optional(db.reader())
    .await?;
    Ok(row.is_some())
}

/// Every (week, scope, xp) of the learner.
pub async fn weeks(db: &Database, id: &str) -> Result<Vec<(String, String, i64)>, Error> {
    let rows = sqlx::query(
        "SELECT week, scope, xp FROM analytics_weekly_xp WHERE learner_id = $1 ORDER BY week, scope",
    )
    .bind(id)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |r| {
        Ok((r.try_get("week")?, r.try_get("scope")?, r.try_get("xp")?))
    })
}

/// Every (course, UTC day) the learner was active in.
pub async fn active_days(db: &Database, id: &str) -> Result<Vec<(String, String)>, Error> {
    let rows = sqlx::query(
        "SELECT course_id, day FROM analytics_course_active WHERE learner_id = $1 ORDER BY day, course_id",
    )
    .bind(id)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |r| Ok((r.try_get("course_id")?, r.try_get("day")?)))
}

pub async fn names(db: &Database, ids: &[String]) -> Result<Vec<(String, String)>, Error> {
    let sql = "SELECT learner_id, display_name FROM analytics_learners WHERE learner_id IN (";
    each(&read_in(db, sql, ids).await?, |row| {
        Ok((row.try_get("learner_id")?, row.try_get("display_name")?))
    })
}

const VISIBLE: &str = "FROM analytics_weekly_xp w JOIN analytics_learners l ON l.learner_id = w.learner_id \
     WHERE w.week = $1 AND w.scope = $2 AND l.leaderboard_hidden = 0";

fn pairs(rows: &[AnyRow]) -> Result<Vec<(String, i64)>, Error> {
    each(rows, |r| Ok((r.try_get("learner_id")?, r.try_get("xp")?)))
}

pub async fn weekly_top(
    db: &Database,
    week: &str,
    scope: &str,
    limit: i64,
) -> Result<Vec<(String, i64)>, Error> {
    let sql = format!(
        "SELECT w.learner_id, w.xp {VISIBLE} ORDER BY w.xp DESC, w.learner_id DESC LIMIT $3"
    );
    pairs(
        &sqlx::query(&sql)
            .bind(week)
            .bind(scope)
            .bind(limit)
            .fetch_all(db.reader())
            .await?,
    )
}

/// Every visible member of a board (a rebuild's input).
pub async fn weekly_all(
    db: &Database,
    week: &str,
    scope: &str,
) -> Result<Vec<(String, i64)>, Error> {
    let sql = format!("SELECT w.learner_id, w.xp {VISIBLE}");
    pairs(
        &sqlx::query(&sql)
            .bind(week)
            .bind(scope)
            .fetch_all(db.reader())
            .await?,
    )
}

pub async fn weekly_count(db: &Database, week: &str, scope: &str) -> Result<i64, Error> {
    let sql = format!("SELECT COUNT(*) AS n {VISIBLE}");
    let row = sqlx::query(&sql)
        .bind(week)
        .bind(scope)
        .fetch_one(db.reader())
        .await?;
    Ok(row.try_get("n")?)
}

/// The learner's XP on a board (hidden or not).
pub async fn weekly_entry(
    db: &Database,
    week: &str,
    scope: &str,
    id: &str,
) -> Result<Option<i64>, Error> {
    Ok(weekly_standing(db, week, scope, id)
        .await?
        .map(|(xp, _)| xp))
}

/// The learner's XP on a board and whether they are hidden.
pub async fn weekly_standing(
    db: &Database,
    week: &str,
    scope: &str,
    id: &str,
) -> Result<Option<(i64, bool)>, Error> {
    let row = sqlx::query(
        "SELECT w.xp, l.leaderboard_hidden FROM analytics_weekly_xp w \
         JOIN analytics_learners l ON l.learner_id = w.learner_id \
         WHERE w.week = $1 AND w.scope = $2 AND w.learner_id = $3",
    )
    .bind(week)
    .bind(scope)
    .bind(id)
    .fetch_optional(db.reader())
    .await?;
    Ok(row
        .map(|r| -> Result<_, sqlx::Error> {
            Ok((
                r.try_get("xp")?,
                r.try_get::<i64, _>("leaderboard_hidden")? != 0,
            ))
        })
        .transpose()?)
}

/// 1 + the visible learners ahead of (`id`, `xp`).
pub async fn weekly_rank(
    db: &Database,
    week: &str,
    scope: &str,
    id: &str,
    xp: i64,
) -> Result<i64, Error> {
    let sql = format!(
        "SELECT COUNT(*) AS n {VISIBLE} AND (w.xp > $3 OR (w.xp = $3 AND w.learner_id > $4))"
    );
    let row = sqlx::query(&sql)
        .bind(week)
        .bind(scope)
        .bind(xp)
        .bind(id)
        .fetch_one(db.reader())
        .await?;
    Ok(row.try_get::<i64, _>("n")? + 1)
}

/// Up to `count` visible learners just ahead of (`id`, `xp`) and just behind, both in
/// board order.
pub async fn weekly_neighbours(
    db: &Database,
    week: &str,
    scope: &str,
    id: &str,
    xp: i64,
    count: i64,
) -> Result<(Vec<(String, i64)>, Vec<(String, i64)>), Error> {
    let above = format!(
        "SELECT w.learner_id, w.xp {VISIBLE} AND (w.xp > $3 OR (w.xp = $3 AND w.learner_id > $4)) \
         ORDER BY w.xp ASC, w.learner_id ASC LIMIT $5"
    );
    let below = format!(
        "SELECT w.learner_id, w.xp {VISIBLE} AND (w.xp < $3 OR (w.xp = $3 AND w.learner_id < $4)) \
         ORDER BY w.xp DESC, w.learner_id DESC LIMIT $5"
    );
    let mut ahead = pairs(
        &sqlx::query(&above)
            .bind(week)
            .bind(scope)
            .bind(xp)
            .bind(id)
            .bind(count)
            .fetch_all(db.reader())
            .await?,
    )?;
    ahead.reverse();
    let behind = pairs(
        &sqlx::query(&below)
            .bind(week)
            .bind(scope)
            .bind(xp)
            .bind(id)
            .bind(count)
            .fetch_all(db.reader())
            .await?,
    )?;
    Ok((ahead, behind))
}

/// The scopes with XP in a week.
pub async fn weekly_scopes(db: &Database, week: &str) -> Result<Vec<String>, Error> {
    let rows = sqlx::query("SELECT DISTINCT scope FROM analytics_weekly_xp WHERE week = $1")
        .bind(week)
        .fetch_all(db.reader())
        .await?;
    each(&rows, |r| r.try_get("scope"))
}

/// The learner's (scope, xp) in a week.
pub async fn learner_week(
    db: &Database,
    week: &str,
    id: &str,
) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query(
        "SELECT scope, xp FROM analytics_weekly_xp WHERE week = $1 AND learner_id = $2",
    )
    .bind(week)
    .bind(id)
    .fetch_all(db.reader())
    .await?;
    each(&rows, |r| Ok((r.try_get("scope")?, r.try_get("xp")?)))
}
