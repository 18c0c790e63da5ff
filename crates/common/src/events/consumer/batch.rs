//! The batching idempotent consumer: what [`super::Consumer`] does for one event, for as
//! many as are waiting (up to a limit) in one database transaction.
//!
//! It takes the records that are ready (the first one waited for, then any that arrive
//! within the linger), records their event ids for the group in one statement that also
//! says which were new (repeats within the batch count once), hands the new envelopes to
//! the [`BatchHandler`] in bus order and commits once; then commits each partition's last
//! offset. When the batch
//! fails, it is applied again one event at a time through the single-event path (with its
//! retries and dead-letter topic), so one poison event does not hold back the others and
//! nothing is lost. A handler that aggregates (adds up the rows of a batch before writing
//! them) writes far fewer rows than one transaction per event would.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use duovarsity_proto::events::Envelope;
use prost::Message;
use sqlx::{Any, Row, Transaction};
use tokio_util::sync::CancellationToken;

use super::{Consumer, Handler, Outcome};
use crate::db::Database;
use crate::error::Error;
use crate::events::{BusError, EventBus, Record, Subscription};
use crate::time::now_millis;

/// What a batching consumer does with new events, inside the transaction that records them.
#[async_trait]
pub trait BatchHandler: Send + Sync {
    /// What a handled batch hands to [`BatchHandler::committed`].
    type Applied: Send;

    /// Applies `envelopes` (none applied before for this group, in bus order per partition).
    async fn handle_batch(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelopes: &[Envelope],
    ) -> Result<Self::Applied, Error>;

    /// Runs after the batch's effect is committed (not for duplicates, nor for a batch
    /// that rolled back).
    async fn committed(&self, _applied: Self::Applied) {}
}

/// A [`BatchHandler`] as a single-event [`Handler`]: the fallback path. The consumer
/// handles, commits and runs `committed` one event at a time, so the one slot holds the
/// event's result between the two (a rolled-back one is replaced by the next).
pub struct OneByOne<H: BatchHandler> {
    handler: Arc<H>,
    applied: std::sync::Mutex<Option<H::Applied>>,
}

#[async_trait]
impl<H: BatchHandler> Handler for OneByOne<H> {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), Error> {
        let applied = self
            .handler
            .handle_batch(tx, std::slice::from_ref(envelope))
            .await?;
        *self.applied.lock().expect("applied slot") = Some(applied);
        Ok(())
    }

    async fn committed(&self, _envelope: &Envelope) {
        let applied = self.applied.lock().expect("applied slot").take();
        if let Some(applied) = applied {
            self.handler.committed(applied).await;
        }
    }
}

pub struct BatchConsumer<H: BatchHandler> {
    single: Consumer<OneByOne<H>>,
    handler: Arc<H>,
    max_batch: usize,
    linger: Duration,
}

impl<H: BatchHandler> BatchConsumer<H> {
    /// A consumer of `topic` for `group` that applies up to `max_batch` events per
    /// transaction, waiting at most `linger` after the first for more to arrive.
    pub fn new(
        db: Database,
        processed_table: &'static str,
        bus: Arc<dyn EventBus>,
        topic: &str,
        group: &str,
        handler: H,
    ) -> Self {
        let handler = Arc::new(handler);
        Self {
            single: Consumer::new(
                db,
                processed_table,
                bus,
                topic,
                group,
                OneByOne {
                    handler: handler.clone(),
                    applied: std::sync::Mutex::new(None),
                },
            ),
            handler,
            max_batch: 500,
            linger: Duration::from_millis(5),
        }
    }

    /// At most `max_batch` events per transaction (1 to 10,000), waiting `linger` for more.
    pub fn with_batch(mut self, max_batch: usize, linger: Duration) -> Self {
        // Each event id is one bound parameter of one statement.
        self.max_batch = max_batch.clamp(1, 10_000);
        self.linger = linger;
        self
    }

    /// Attempts per event (on the one-by-one path) before the dead-letter topic.
    pub fn with_retries(mut self, max_attempts: u32, first_backoff: Duration) -> Self {
        self.single = self.single.with_retries(max_attempts, first_backoff);
        self
    }

    /// [`Self::run`] as a module's background task: until `shutdown`, logging why if it
    /// stops before.
    pub async fn run_until(self, shutdown: CancellationToken) {
        let (topic, group) = (self.single.topic.clone(), self.single.group.clone());
        if let Err(error) = self.run(shutdown).await {
            tracing::error!(%error, topic, group, "consumer stopped");
        }
    }

    /// Consumes until `shutdown`, resubscribing with backoff while the bus is unavailable.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BusError> {
        let mut backoff = self.single.backoff();
        loop {
            let subscribed = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                subscribed = self.single.bus.subscribe(&self.single.topic, &self.single.group) => subscribed,
            };
            match subscribed {
                Ok(mut subscription) => {
                    backoff.reset();
                    loop {
                        let (records, failed) = tokio::select! {
                            () = shutdown.cancelled() => return Ok(()),
                            taken = self.take(&mut subscription) => taken,
                        };
                        if !records.is_empty() {
                            self.process(&mut subscription, &records).await;
                        }
                        if let Some(error) = failed {
                            tracing::warn!(%error, topic = %self.single.topic, "consuming failed; subscribing again");
                            break;
                        }
                    }
                }
                Err(BusError::InvalidName(name)) => return Err(BusError::InvalidName(name)),
                Err(error) => {
                    tracing::warn!(%error, topic = %self.single.topic, "cannot subscribe yet; retrying");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = backoff.wait() => {}
            }
        }
    }

    /// The next batch: one record waited for, then what arrives within the linger (a
    /// backlog fills it at once). Stops early at a failure, returning what it has.
    async fn take(
        &self,
        subscription: &mut Box<dyn Subscription>,
    ) -> (Vec<Record>, Option<BusError>) {
        let mut records = Vec::new();
        match subscription.next().await {
            Ok(record) => records.push(record),
            Err(error) => return (records, Some(error)),
        }
        let until = tokio::time::Instant::now() + self.linger;
        while records.len() < self.max_batch {
            match tokio::time::timeout_at(until, subscription.next()).await {
                Ok(Ok(record)) => records.push(record),
                Ok(Err(error)) => return (records, Some(error)),
                Err(_) => break,
            }
        }
        (records, None)
    }

    /// Applies (or skips, or dead-letters) `records` and commits their offsets.
    pub async fn process(
        &self,
        subscription: &mut Box<dyn Subscription>,
        records: &[Record],
    ) -> Vec<Outcome> {
        let mut outcomes = vec![Outcome::Duplicate; records.len()];
        let mut batch: Vec<(usize, Envelope)> = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            match Envelope::decode(record.payload.clone()) {
                Ok(envelope) if !envelope.event_id.is_empty() => batch.push((index, envelope)),
                Ok(_) => {
                    outcomes[index] = self
                        .single
                        .dead_letter(record, "the envelope has no event_id".into(), 0)
                        .await;
                }
                Err(error) => {
                    outcomes[index] = self
                        .single
                        .dead_letter(record, format!("not an event envelope: {error}"), 0)
                        .await;
                }
            }
        }
        match self.apply_batch(&batch).await {
            Ok(applied) => {
                for index in applied {
                    outcomes[index] = Outcome::Applied;
                }
            }
            Err(error) => {
                tracing::warn!(%error, events = batch.len(), topic = %self.single.topic, "a batch failed; applying its events one at a time");
                for (index, envelope) in &batch {
                    outcomes[*index] = self
                        .single
                        .apply_with_retries(envelope, &records[*index])
                        .await;
                }
            }
        }
        for outcome in &outcomes {
            let label = match outcome {
                Outcome::Applied => "applied",
                Outcome::Duplicate => "duplicate",
                Outcome::DeadLettered(_) => "dead_lettered",
            };
            metrics::counter!("events_consumed_total", "topic" => self.single.topic.clone(), "group" => self.single.group.clone(), "outcome" => label)
                .increment(1);
        }
        // Each partition's last record marks everything before it done.
        let mut last: BTreeMap<u32, &Record> = BTreeMap::new();
        for record in records {
            let slot = last.entry(record.partition).or_insert(record);
            if record.offset > slot.offset {
                *slot = record;
            }
        }
        for record in last.values() {
            if let Err(error) = subscription.commit(record).await {
                tracing::warn!(%error, "committing an event offset failed; it will be delivered again and skipped");
            }
        }
        outcomes
    }

    /// One transaction: the new events of `batch` recorded and handled. Returns the
    /// indexes applied.
    ///
    /// Recording comes first, as one `INSERT .. ON CONFLICT DO NOTHING RETURNING`: the ids
    /// it returns are the events new to the group (found through the primary key, in the
    /// same statement that records them), and only those are handled. A failure after it
    /// rolls the records back with everything else.
    async fn apply_batch(&self, batch: &[(usize, Envelope)]) -> Result<Vec<usize>, Error> {
        let mut candidates: Vec<(usize, &Envelope)> = Vec::with_capacity(batch.len());
        let mut ids = HashSet::new();
        for (index, envelope) in batch {
            // A repeat within the batch is a duplicate of its first.
            if ids.insert(envelope.event_id.as_str()) {
                candidates.push((*index, envelope));
            }
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let table = self.single.processed_table;
        let rows: Vec<String> = (0..candidates.len())
            .map(|i| format!("($1, ${}, $2)", i + 3))
            .collect();
        let insert = format!(
            "INSERT INTO {table} (consumer_group, event_id, processed_at) VALUES {} \
             ON CONFLICT (consumer_group, event_id) DO NOTHING RETURNING event_id",
            rows.join(", ")
        );
        let mut query = sqlx::query(&insert)
            .bind(&self.single.group)
            .bind(now_millis());
        for (_, envelope) in &candidates {
            query = query.bind(&envelope.event_id);
        }
        let mut tx = self.single.db.writer().begin().await?;
        let mut recorded: HashSet<String> = HashSet::new();
        for row in query.fetch_all(&mut *tx).await? {
            recorded.insert(row.try_get("event_id")?);
        }
        let fresh: Vec<(usize, &Envelope)> = candidates
            .into_iter()
            .filter(|(_, envelope)| recorded.contains(&envelope.event_id))
            .collect();
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let envelopes: Vec<Envelope> = fresh.iter().map(|(_, e)| (*e).clone()).collect();
        let applied = self.handler.handle_batch(&mut tx, &envelopes).await?;
        tx.commit().await?;
        self.handler.committed(applied).await;
        Ok(fresh.into_iter().map(|(index, _)| index).collect())
    }
}

/// `$from, $from+1, ...`: `count` numbered placeholders.
pub fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
