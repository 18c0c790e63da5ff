//! Usage rows: one per request, and the sums budgets and the usage report read.

use duovarsity_common::Error;
use duovarsity_common::db::Database;
use sqlx::Row;

/// One request's usage as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub id: String,
    pub user_id: String,
    pub model: String,
    pub provider: String,
    pub task: String,
    /// The lesson the request was about (empty when none was named).
    pub course_id: String,
    pub lesson_id: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cost_nano: i64,
    pub cached: bool,
    pub latency_ms: u32,
    pub created_at: i64,
}

/// One request's usage, in the transaction that also enqueues its event.
pub async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    usage: &UsageRow,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO ai_usage (id, user_id, model, provider, task, prompt_tokens, completion_tokens, \
         cost_nano, cached, latency_ms, created_at, course_id, lesson_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&usage.id)
    .bind(&usage.user_id)
    .bind(&usage.model)
    .bind(&usage.provider)
    .bind(&usage.task)
    .bind(i64::from(usage.prompt_tokens))
    .bind(i64::from(usage.completion_tokens))
    .bind(usage.cost_nano)
    .bind(i64::from(usage.cached))
    .bind(i64::from(usage.latency_ms))
    .bind(usage.created_at)
    .bind(&usage.course_id)
    .bind(&usage.lesson_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Each user's cost since `since` (ms), and the sum of all of them.
pub async fn spend_since(db: &Database, since: i64) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query(
        "SELECT user_id, CAST(SUM(cost_nano) AS BIGINT) AS spent FROM ai_usage \
         WHERE created_at >= $1 GROUP BY user_id",
    )
    .bind(since)
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("user_id")?, row.try_get("spent")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::from)
}

/// A user's requests and cache hits since `since` (ms), and the latest `limit` rows.
pub async fn of_user(
    db: &Database,
    user_id: &str,
    since: i64,
    limit: u32,
) -> Result<(i64, i64, Vec<UsageRow>), Error> {
    let counts = sqlx::query(
        "SELECT COUNT(*) AS requests, CAST(COALESCE(SUM(cached), 0) AS BIGINT) AS hits \
         FROM ai_usage WHERE user_id = $1 AND created_at >= $2",
    )
    .bind(user_id)
    .bind(since)
    .fetch_one(db.reader())
    .await?;
    let rows = sqlx::query(
        "SELECT id, user_id, model, provider, task, prompt_tokens, completion_tokens, cost_nano, \
         cached, latency_ms, created_at, course_id, lesson_id FROM ai_usage WHERE user_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(user_id)
    .bind(i64::from(limit))
    .fetch_all(db.reader())
    .await?;
    let narrow = |value: i64| u32::try_from(value).unwrap_or(u32::MAX);
    let recent = rows
        .iter()
        .map(|row| {
            Ok(UsageRow {
                id: row.try_get("id")?,
                user_id: row.try_get("user_id")?,
                model: row.try_get("model")?,
                provider: row.try_get("provider")?,
                task: row.try_get("task")?,
                course_id: row.try_get("course_id")?,
                lesson_id: row.try_get("lesson_id")?,
                prompt_tokens: narrow(row.try_get("prompt_tokens")?),
                completion_tokens: narrow(row.try_get("completion_tokens")?),
                cost_nano: row.try_get("cost_nano")?,
                cached: row.try_get::<i64, _>("cached")? != 0,
                latency_ms: narrow(row.try_get("latency_ms")?),
                created_at: row.try_get("created_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok((counts.try_get("requests")?, counts.try_get("hits")?, recent))
}
