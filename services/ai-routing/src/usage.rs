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
use duovarsity_common::events::{PendingEvent, pending_event};
use duovarsity_common::time::now_millis;
use duovarsity_proto::events::AiUsage;

use crate::store;
pub use crate::store::usage::UsageRow;

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

/// The rows and their `ai.usage` events, in one transaction.
async fn write(db: &Database, outbox: &Outbox, rows: &[UsageRow]) -> Result<(), Error> {
    let mut tx = db.writer().begin().await?;
    for usage in rows {
        store::usage::insert(&mut tx, usage).await?;
        outbox.enqueue_event(&mut tx, &usage_event(usage)).await?;
    }
    tx.commit().await?;
    outbox.wake();
    Ok(())
}

/// The `ai.usage` event of a row.
fn usage_event(usage: &UsageRow) -> PendingEvent {
    pending_event(
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
            course_id: usage.course_id.clone(),
            lesson_id: usage.lesson_id.clone(),
        },
    )
}

pub fn now() -> i64 {
    now_millis()
}
