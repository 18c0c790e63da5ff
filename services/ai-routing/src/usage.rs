//! Usage, recorded durably: one row per request (tokens, cost, model, cache, latency) and
//! an `ai.usage` event through the service's outbox, in one transaction.

use duovarsity_common::Error;
use duovarsity_common::db::{Database, now_millis};
use duovarsity_common::events::outbox::Outbox;
use duovarsity_common::events::pending_event;
use duovarsity_proto::events::AiUsage;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub id: String,
    pub user_id: String,
    pub model: String,
    pub provider: String,
    pub task: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cost_nano: i64,
    pub cached: bool,
    pub latency_ms: u32,
    pub created_at: i64,
}

pub async fn record(db: &Database, outbox: &Outbox, usage: &UsageRow) -> Result<(), Error> {
    let mut tx = db.writer().begin().await?;
    sqlx::query(
        "INSERT INTO ai_usage (id, user_id, model, provider, task, prompt_tokens, completion_tokens, \
         cost_nano, cached, latency_ms, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
    .execute(&mut *tx)
    .await?;
    let event = pending_event(
        &usage.user_id,
        &AiUsage {
            request_id: usage.id.clone(),
            user_id: usage.user_id.clone(),
            model: usage.model.clone(),
            provider: usage.provider.clone(),
            task: usage.task.clone(),
            prompt_tokens: i32::try_from(usage.prompt_tokens).unwrap_or(i32::MAX),
            completion_tokens: i32::try_from(usage.completion_tokens).unwrap_or(i32::MAX),
            cost_nano_usd: usage.cost_nano,
            cached: usage.cached,
            latency_ms: i32::try_from(usage.latency_ms).unwrap_or(i32::MAX),
        },
    );
    outbox.enqueue_event(&mut tx, &event).await?;
    tx.commit().await?;
    outbox.wake();
    Ok(())
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
         cached, latency_ms, created_at FROM ai_usage WHERE user_id = $1 \
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

pub fn now() -> i64 {
    now_millis()
}
