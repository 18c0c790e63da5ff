//! Usage, recorded durably: one row per request (tokens, cost, model, cache, latency) and
//! an `ai.usage` event through the service's outbox, in one transaction.
//!
//! Off the request path: answers are not held back by a database write. The
//! [`UsageWriter`] queues rows (bounded: a full queue makes requests wait rather than drop
//! rows) and a background task writes them in batches, one transaction each, and drains
//! the queue on shutdown. A crash loses at most the rows of the batch being written; a
//! reader that needs its own latest rows calls [`UsageWriter::flush`] first.

use duovarsity_common::Error;
use duovarsity_common::backoff::Backoff;
use duovarsity_common::db::Database;
use duovarsity_common::events::outbox::Outbox;
use duovarsity_common::events::pending_event;
use duovarsity_common::time::now_millis;
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

/// Rows waiting to be written at most; past it, recording waits.
const QUEUE: usize = 10_000;
/// Rows per transaction at most.
const BATCH: usize = 500;

enum Item {
    Row(Box<UsageRow>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct UsageWriter {
    queue: tokio::sync::mpsc::Sender<Item>,
}

/// The writing side: run it until shutdown ([`UsageWriter::channel`]).
pub struct UsageTask {
    queue: tokio::sync::mpsc::Receiver<Item>,
    db: Database,
    outbox: Outbox,
}

impl UsageWriter {
    pub fn channel(db: Database, outbox: Outbox) -> (Self, UsageTask) {
        let (send, receive) = tokio::sync::mpsc::channel(QUEUE);
        (
            Self { queue: send },
            UsageTask {
                queue: receive,
                db,
                outbox,
            },
        )
    }

    /// Queues a row (waits only while the queue is full).
    pub async fn record(&self, row: UsageRow) {
        if self.queue.send(Item::Row(Box::new(row))).await.is_err() {
            tracing::error!("the usage writer has stopped; a usage row is lost");
        }
    }

    /// Returns once every row queued before it is written.
    pub async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.queue.send(Item::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

impl UsageTask {
    /// Writes batches until `shutdown`, then what is still queued.
    pub async fn run(mut self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => break,
                item = self.queue.recv() => match item {
                    Some(item) => item,
                    None => return,
                },
            };
            self.write_batch(first).await;
        }
        self.queue.close();
        while let Some(item) = self.queue.recv().await {
            self.write_batch(item).await;
        }
    }

    async fn write_batch(&mut self, first: Item) {
        let mut rows = Vec::new();
        let mut waiting = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Item::Row(row) => rows.push(*row),
                Item::Flush(done) => waiting.push(done),
            }
            if rows.len() < BATCH {
                next = self.queue.try_recv().ok();
            }
        }
        // Retried while the database is unavailable: rows are not dropped.
        let mut backoff = Backoff::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(5),
        );
        while !rows.is_empty() {
            match write(&self.db, &self.outbox, &rows).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, rows = rows.len(), "writing AI usage failed; retrying");
                    backoff.wait().await;
                }
            }
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

async fn write(db: &Database, outbox: &Outbox, rows: &[UsageRow]) -> Result<(), Error> {
    let mut tx = db.writer().begin().await?;
    for usage in rows {
        insert(&mut tx, outbox, usage).await?;
    }
    tx.commit().await?;
    outbox.wake();
    Ok(())
}

async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    outbox: &Outbox,
    usage: &UsageRow,
) -> Result<(), Error> {
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
    .execute(&mut **tx)
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
    outbox.enqueue_event(tx, &event).await
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
