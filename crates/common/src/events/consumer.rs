//! The idempotent consumer: applies each event once, whatever the bus redelivers.
//!
//! For every record: decode the [`Envelope`]; in one database transaction, skip it if its
//! `event_id` is already recorded for this consumer group, otherwise run the handler and
//! record the `event_id`; commit the transaction, then the bus offset. A redelivered event
//! (after a crash, a rebalance, or an outbox relay that published twice) finds its id and
//! changes nothing. A failing event is retried with backoff; after `max_attempts` it goes
//! to `<topic>.dlq` with the error in its headers and the consumer moves on. A record that
//! is not an envelope at all goes to the DLQ at once.
//!
//! The consumer's service owns the processed-events table (`<service>_processed_events`,
//! columns `consumer_group`, `event_id`, `processed_at`, primary key on the first two).

pub mod batch;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use duovarsity_proto::events::Envelope;
use prost::Message;
use sqlx::{Any, Transaction};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{EventBus, Outgoing, Record, Subscription};
use crate::backoff::Backoff;
use crate::db::Database;
use crate::error::Error;
use crate::telemetry::spans;
use crate::time::now_millis;

/// The longest pause between retries of a consumer.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a consumer does with one event, inside the transaction that records it.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn handle(&self, tx: &mut Transaction<'_, Any>, envelope: &Envelope)
    -> Result<(), Error>;

    /// Runs after the effect of `envelope` is committed (for example to wake live
    /// readers); not run for duplicates.
    async fn committed(&self, _envelope: &Envelope) {}
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    /// Sent to the dead-letter topic, with the reason.
    DeadLettered(String),
}

pub struct Consumer<H> {
    db: Database,
    processed_table: &'static str,
    bus: Arc<dyn EventBus>,
    topic: String,
    group: String,
    handler: H,
    max_attempts: u32,
    first_backoff: Duration,
}

impl<H: Handler> Consumer<H> {
    pub fn new(
        db: Database,
        processed_table: &'static str,
        bus: Arc<dyn EventBus>,
        topic: &str,
        group: &str,
        handler: H,
    ) -> Self {
        Self {
            db,
            processed_table,
            bus,
            topic: topic.to_string(),
            group: group.to_string(),
            handler,
            max_attempts: 5,
            first_backoff: Duration::from_millis(100),
        }
    }

    /// Attempts per event before the dead-letter topic, and the first retry pause (doubling).
    pub fn with_retries(mut self, max_attempts: u32, first_backoff: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.first_backoff = first_backoff;
        self
    }

    /// The pauses of this consumer's retry loops: from `first_backoff`, up to 5 s.
    fn backoff(&self) -> Backoff {
        Backoff::new(self.first_backoff, MAX_BACKOFF)
    }

    /// Consumes until `shutdown`. While the bus is unavailable (at start, or when the
    /// subscription fails later) it resubscribes with backoff, so a broker that comes up
    /// after the service, or comes back, is picked up without a restart.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), super::BusError> {
        let mut backoff = self.backoff();
        loop {
            let subscribed = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                subscribed = self.bus.subscribe(&self.topic, &self.group) => subscribed,
            };
            match subscribed {
                Ok(mut subscription) => {
                    backoff.reset();
                    loop {
                        let record = tokio::select! {
                            () = shutdown.cancelled() => return Ok(()),
                            record = subscription.next() => record,
                        };
                        match record {
                            Ok(record) => {
                                self.process(&mut subscription, &record).await;
                            }
                            Err(error) => {
                                tracing::warn!(%error, topic = %self.topic, "consuming failed; subscribing again");
                                break;
                            }
                        }
                    }
                }
                Err(super::BusError::InvalidName(name)) => {
                    return Err(super::BusError::InvalidName(name));
                }
                Err(error) => {
                    tracing::warn!(%error, topic = %self.topic, "cannot subscribe yet; retrying");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = backoff.wait() => {}
            }
        }
    }

    /// Applies (or skips, or dead-letters) one record and commits its offset, in a span
    /// that continues the producer's trace (the record's `traceparent` header).
    pub async fn process(
        &self,
        subscription: &mut Box<dyn Subscription>,
        record: &Record,
    ) -> Outcome {
        let span = crate::telemetry::spans::messaging_process(
            self.bus.system(),
            &self.topic,
            &self.group,
            record.partition as i32,
            record.offset as i64,
            record.header("traceparent").unwrap_or_default(),
        );
        self.process_in_span(subscription, record)
            .instrument(span)
            .await
    }

    async fn process_in_span(
        &self,
        subscription: &mut Box<dyn Subscription>,
        record: &Record,
    ) -> Outcome {
        let outcome = match Envelope::decode(record.payload.clone()) {
            Ok(envelope) if !envelope.event_id.is_empty() => {
                self.apply_with_retries(&envelope, record).await
            }
            Ok(_) => {
                self.dead_letter(record, "the envelope has no event_id".into(), 0)
                    .await
            }
            Err(error) => {
                self.dead_letter(record, format!("not an event envelope: {error}"), 0)
                    .await
            }
        };
        let label = match &outcome {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered(_) => "dead_lettered",
        };
        metrics::counter!("events_consumed_total", "topic" => self.topic.clone(), "group" => self.group.clone(), "outcome" => label)
            .increment(1);
        if let Err(error) = subscription.commit(record).await {
            tracing::warn!(%error, "committing an event offset failed; it will be delivered again and skipped");
        }
        outcome
    }

    async fn apply_with_retries(&self, envelope: &Envelope, record: &Record) -> Outcome {
        let mut backoff = self.backoff();
        let mut last_error = String::new();
        for attempt in 1..=self.max_attempts {
            match self.apply_once(envelope).await {
                Ok(outcome) => return outcome,
                Err(error) => {
                    tracing::warn!(%error, event_id = %envelope.event_id, attempt, "event handler failed");
                    last_error = error.to_string();
                }
            }
            if attempt < self.max_attempts {
                backoff.wait().await;
            }
        }
        self.dead_letter(record, last_error, self.max_attempts)
            .await
    }

    async fn apply_once(&self, envelope: &Envelope) -> Result<Outcome, Error> {
        let mut tx = self.db.writer().begin().await?;
        let system = spans::db_system(&tx);
        let seen = sqlx::query(&format!(
            "SELECT 1 AS seen FROM {} WHERE consumer_group = $1 AND event_id = $2",
            self.processed_table
        ))
        .bind(&self.group)
        .bind(&envelope.event_id)
        .fetch_optional(&mut *tx)
        .instrument(spans::db_statement(&system, "SELECT", self.processed_table))
        .await?;
        if seen.is_some() {
            return Ok(Outcome::Duplicate);
        }
        self.handler.handle(&mut tx, envelope).await?;
        let recorded = sqlx::query(&format!(
            "INSERT INTO {} (consumer_group, event_id, processed_at) VALUES ($1, $2, $3)",
            self.processed_table
        ))
        .bind(&self.group)
        .bind(&envelope.event_id)
        .bind(now_millis())
        .execute(&mut *tx)
        .instrument(spans::db_statement(&system, "INSERT", self.processed_table))
        .await;
        match recorded {
            // Another member applied it concurrently: ours rolls back.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Outcome::Duplicate),
            Err(e) => Err(e.into()),
            Ok(_) => {
                tx.commit().await?;
                self.handler.committed(envelope).await;
                Ok(Outcome::Applied)
            }
        }
    }

    async fn dead_letter(&self, record: &Record, reason: String, attempts: u32) -> Outcome {
        let mut headers = record.headers.clone();
        headers.push(("dlq.error".into(), reason.clone()));
        headers.push(("dlq.attempts".into(), attempts.to_string()));
        headers.push(("dlq.group".into(), self.group.clone()));
        headers.push((
            "dlq.source".into(),
            format!("{}/{}/{}", record.topic, record.partition, record.offset),
        ));
        let dead = Outgoing {
            topic: format!("{}.dlq", self.topic),
            key: record.key.clone(),
            payload: record.payload.clone(),
            headers,
        };
        // The offset is committed after this returns, so the record must be in the
        // dead-letter topic first: keep trying while the bus is down.
        let mut backoff = self.backoff();
        while let Err(error) = self.bus.publish(dead.clone()).await {
            tracing::error!(%error, "could not publish to the dead-letter topic; retrying");
            backoff.wait().await;
        }
        metrics::counter!("events_dead_lettered_total", "topic" => self.topic.clone()).increment(1);
        tracing::warn!(topic = %self.topic, reason = %reason, "event sent to the dead-letter topic");
        Outcome::DeadLettered(reason)
    }
}
