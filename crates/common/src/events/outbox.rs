//! The transactional outbox. A service writes its state change and the events describing
//! it in one database transaction ([`Outbox::enqueue`]); a relay ([`OutboxRelay`])
//! publishes pending rows in order and marks them sent. Nothing is lost while the bus is
//! down (rows wait), and nothing is published for a rolled-back change (the rows roll back
//! with it). A crash between publish and mark-sent publishes the row again on restart:
//! consumers are idempotent (see [`super::consumer`]).
//!
//! Each service has its own outbox table (`<service>_outbox`), created by its migrations,
//! so services can share one PostgreSQL database. On PostgreSQL several relay replicas
//! take disjoint batches (`FOR UPDATE SKIP LOCKED`); on SQLite there is one process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sqlx::{Any, Row, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{BusError, EventBus, Outgoing};
use crate::backoff::Backoff;
use crate::db::{Backend, Database};
use crate::error::Error;
use crate::telemetry::spans;
use crate::time::now_millis;

/// How many rows one relay round publishes.
const BATCH: i64 = 100;
/// How often the relay looks for rows when nobody woke it.
const POLL: Duration = Duration::from_millis(200);
/// The longest pause between retries while the bus is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Writes events into a service's outbox table.
#[derive(Clone)]
pub struct Outbox {
    table: &'static str,
    wake: Arc<Notify>,
}

impl Outbox {
    /// `table` is the service's outbox table, e.g. `user_outbox`.
    pub fn new(table: &'static str) -> Self {
        Self {
            table,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Adds a [`super::PendingEvent`] to the caller's transaction.
    pub async fn enqueue_event(
        &self,
        tx: &mut Transaction<'_, Any>,
        event: &super::PendingEvent,
    ) -> Result<(), Error> {
        self.enqueue(tx, &event.event_id, &event.record).await
    }

    /// Adds an event to the caller's transaction. `event_id` (UUIDv7) orders the relay.
    pub async fn enqueue(
        &self,
        tx: &mut Transaction<'_, Any>,
        event_id: &str,
        event: &Outgoing,
    ) -> Result<(), Error> {
        let headers = serde_json::to_string(&event.headers)
            .map_err(|e| Error::internal("encoding event headers", &e))?;
        let span = spans::db_statement(&spans::db_system(tx), "INSERT", self.table);
        sqlx::query(&format!(
            "INSERT INTO {} (id, topic, event_key, payload, headers, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            self.table
        ))
        .bind(event_id)
        .bind(&event.topic)
        .bind(&event.key)
        .bind(event.payload.to_vec())
        .bind(headers)
        .bind(now_millis())
        .execute(&mut **tx)
        .instrument(span)
        .await?;
        Ok(())
    }

    /// Tells the relay that new rows were committed (it also polls).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The relay for this outbox.
    pub fn relay(&self, db: Database, bus: Arc<dyn EventBus>) -> OutboxRelay {
        OutboxRelay {
            db,
            table: self.table,
            bus,
            wake: self.wake.clone(),
        }
    }
}

/// Publishes an outbox's pending rows.
pub struct OutboxRelay {
    db: Database,
    table: &'static str,
    bus: Arc<dyn EventBus>,
    wake: Arc<Notify>,
}

struct Pending {
    id: String,
    outgoing: Outgoing,
    created_at: i64,
}

impl OutboxRelay {
    /// Publishes until `shutdown`, backing off while the bus is unavailable. Never blocks
    /// request handling: it runs on its own task and only reads committed rows.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(50), MAX_BACKOFF);
        loop {
            let pause = match self.publish_batch().await {
                Ok(0) => POLL,
                Ok(_) => {
                    backoff.reset();
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, table = self.table, "outbox relay: publishing failed; retrying");
                    backoff.next_pause()
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One round: publishes up to a batch of pending rows in id order and marks them sent.
    /// Stops at the first failure, so no later event overtakes an unpublished one.
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        // PostgreSQL: the rows stay locked (SKIP LOCKED) in one transaction across the
        // publish, so concurrent relays take disjoint batches. SQLite: one process and one
        // writer connection, which must not be held while publishing.
        let lock = self.db.backend() == Backend::Postgres;
        let sql = format!(
            "SELECT id, topic, event_key, payload, headers, created_at FROM {} WHERE sent_at IS NULL \
             ORDER BY id LIMIT {BATCH}{}",
            self.table,
            if lock { " FOR UPDATE SKIP LOCKED" } else { "" }
        );
        let mut held = if lock {
            Some(self.db.writer().begin().await?)
        } else {
            None
        };
        let rows = match held.as_mut() {
            Some(tx) => sqlx::query(&sql).fetch_all(&mut **tx).await?,
            None => sqlx::query(&sql).fetch_all(self.db.writer()).await?,
        };
        let pending = rows
            .iter()
            .map(pending_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let published = self.publish_all(&pending).await;
        let mut tx = match held {
            Some(tx) => tx,
            None => self.db.writer().begin().await?,
        };
        self.mark_sent(&mut tx, &pending[..published.count]).await?;
        tx.commit().await?;
        self.record_backlog().await;
        published.into_result()
    }

    async fn publish_all(&self, pending: &[Pending]) -> Published {
        let started = Instant::now();
        // One producer span per event, continuing the trace it was written in; the record
        // carries the producer span's context on, so consumers are its children.
        let (records, spans): (Vec<Outgoing>, Vec<tracing::Span>) = pending
            .iter()
            .map(|row| {
                let mut record = row.outgoing.clone();
                let span = spans::messaging_publish(
                    self.bus.system(),
                    &record.topic,
                    record.header("traceparent").unwrap_or_default(),
                );
                // Untraced (no exporter in this process): the stored context travels on.
                let traceparent = spans::traceparent_of(&span);
                if !traceparent.is_empty() {
                    record.set_header("traceparent", traceparent);
                }
                (record, span)
            })
            .unzip();
        let (count, error) = self.bus.publish_all(&records).await;
        for span in &spans[count..] {
            spans::record_error(span);
        }
        if count > 0 {
            metrics::histogram!("outbox_publish_seconds", "table" => self.table)
                .record(started.elapsed().as_secs_f64() / count as f64);
        }
        let now = now_millis();
        for row in &pending[..count] {
            metrics::histogram!("outbox_event_age_seconds", "table" => self.table)
                .record((now - row.created_at).max(0) as f64 / 1000.0);
        }
        Published { count, error }
    }

    async fn mark_sent(
        &self,
        tx: &mut Transaction<'_, Any>,
        rows: &[Pending],
    ) -> Result<(), sqlx::Error> {
        let now = now_millis();
        for row in rows {
            sqlx::query(&format!(
                "UPDATE {} SET sent_at = $1 WHERE id = $2",
                self.table
            ))
            .bind(now)
            .bind(&row.id)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    async fn record_backlog(&self) {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM {} WHERE sent_at IS NULL",
            self.table
        ))
        .fetch_one(self.db.reader())
        .await;
        if let Ok(row) = row {
            let backlog: i64 = row.try_get("n").unwrap_or(0);
            let oldest: Option<i64> = row.try_get("oldest").unwrap_or(None);
            metrics::gauge!("outbox_backlog", "table" => self.table).set(backlog as f64);
            metrics::gauge!("outbox_oldest_age_seconds", "table" => self.table)
                .set(oldest.map_or(0.0, |at| (now_millis() - at).max(0) as f64 / 1000.0));
        }
    }
}

struct Published {
    count: usize,
    error: Option<BusError>,
}

impl Published {
    fn into_result(self) -> Result<usize, RelayError> {
        match self.error {
            Some(error) => Err(RelayError::Bus(error)),
            None => Ok(self.count),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox table: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Bus(#[from] BusError),
}

fn pending_from_row(row: &sqlx::any::AnyRow) -> Result<Pending, sqlx::Error> {
    let headers: String = row.try_get("headers")?;
    Ok(Pending {
        id: row.try_get("id")?,
        outgoing: Outgoing {
            topic: row.try_get("topic")?,
            key: row.try_get("event_key")?,
            payload: Bytes::from(row.try_get::<Vec<u8>, _>("payload")?),
            headers: serde_json::from_str(&headers).unwrap_or_default(),
        },
        created_at: row.try_get("created_at")?,
    })
}
