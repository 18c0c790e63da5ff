//! The event bus: Kafka-like topics, keys, partitions, consumer groups and offsets behind
//! one trait, so services publish and consume the same way in embedded mode (the
//! durable [`embedded::EmbeddedBus`], one SQLite file) and in production (Kafka,
//! [`kafka::KafkaBus`]).
//!
//! Semantics every implementation keeps (checked by the shared contract suite in
//! `tests/event_bus.rs`):
//! - a record's partition is chosen from its key, so one key's records stay in order;
//! - each consumer group sees every record of a topic; members of one group split the
//!   partitions between them;
//! - a subscription starts at its group's committed offset (or the oldest kept record) and
//!   commits explicitly, after the effect is stored, so delivery is at least once: records
//!   read but not committed come again after a restart or a rebalance;
//! - `seek` replays from an offset.

pub mod catalog;
pub mod consumer;
pub mod embedded;
pub mod kafka;
pub mod outbox;
pub mod schema;

pub use catalog::{Event, topics};

use async_trait::async_trait;
use bytes::Bytes;

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    /// The aggregate id: records with one key keep their order.
    pub key: String,
    pub payload: Bytes,
    /// Trace context and other metadata, as Kafka headers.
    pub headers: Vec<(String, String)>,
}

impl Outgoing {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// Replaces (or adds) header `name`, where it was (headers keep their order).
    pub fn set_header(&mut self, name: &str, value: String) {
        match self.headers.iter_mut().find(|(key, _)| key == name) {
            Some(slot) => slot.1 = value,
            None => self.headers.push((name.to_string(), value)),
        }
    }
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// A record as consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub payload: Bytes,
    pub headers: Vec<(String, String)>,
}

impl Record {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// Where a published record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: u32,
    pub offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the event bus is unavailable: {0}")]
    Unavailable(String),
    #[error("invalid topic or group name {0:?}")]
    InvalidName(String),
    #[error("partition {0} is not assigned to this subscription")]
    NotAssigned(u32),
    #[error(
        "the event bus is full: {retained} of {limit} bytes are kept for consumer groups that \
         have not caught up; publishing resumes as they commit"
    )]
    Full { retained: u64, limit: u64 },
}

#[async_trait]
pub trait EventBus: Send + Sync {
    /// The `messaging.system` of traces: `kafka`, or the embedded bus.
    fn system(&self) -> &'static str {
        "duovarsity_embedded"
    }

    async fn publish(&self, record: Outgoing) -> Result<Delivered, BusError>;

    /// Publishes `records` in order and says how many leading ones were delivered, with
    /// the error that stopped it. Implementations may pipeline, but a record is never
    /// reported delivered after one before it failed.
    async fn publish_all(&self, records: &[Outgoing]) -> (usize, Option<BusError>) {
        for (count, record) in records.iter().enumerate() {
            if let Err(error) = self.publish(record.clone()).await {
                return (count, Some(error));
            }
        }
        (records.len(), None)
    }

    /// Joins `group` on `topic`.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError>;

    /// Writes what is held in memory (commits) and releases the bus; called once at
    /// shutdown, after every producer and consumer stopped.
    async fn close(&self) {}
}

#[async_trait]
pub trait Subscription: Send {
    /// The next record of an assigned partition, waiting for one if needed.
    async fn next(&mut self) -> Result<Record, BusError>;

    /// Marks `record` (and everything before it in its partition) done for the group.
    async fn commit(&mut self, record: &Record) -> Result<(), BusError>;

    /// Continues an assigned partition from `offset` (replay).
    async fn seek(&mut self, partition: u32, offset: u64) -> Result<(), BusError>;
}

/// The partition of `key` among `partitions` (FNV-1a, stable across processes and builds).
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions.max(1)
}

fn valid_name(name: &str) -> Result<(), BusError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(BusError::InvalidName(name.to_string()))
    }
}

/// An event ready for an outbox: its id and the record to publish.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub event_id: String,
    pub record: Outgoing,
}

/// Wraps `payload` in an [`Envelope`] with a new UUIDv7 id, the current time and the
/// current trace context, keyed by the aggregate id, for the payload's topic and type
/// ([`catalog`]).
///
/// [`Envelope`]: duovarsity_proto::events::Envelope
pub fn pending_event<E: Event>(aggregate_id: &str, payload: &E) -> PendingEvent {
    pending_event_at(aggregate_id, payload, crate::time::now_millis())
}

/// [`pending_event`] of something that happened at `occurred_at` (milliseconds since the
/// epoch): seeded history.
pub fn pending_event_at<E: Event>(
    aggregate_id: &str,
    payload: &E,
    occurred_at: i64,
) -> PendingEvent {
    let (topic, event_type, full_name) = (E::TOPIC, E::TYPE, E::FULL_NAME);
    use prost::Message as _;
    let event_id = uuid::Uuid::now_v7().to_string();
    let mut trace = http::HeaderMap::new();
    crate::telemetry::inject_trace(&tracing::Span::current(), &mut trace);
    let traceparent = trace
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let envelope = duovarsity_proto::events::Envelope {
        event_id: event_id.clone(),
        r#type: event_type.to_string(),
        aggregate_id: aggregate_id.to_string(),
        occurred_at: Some(crate::time::timestamp_from_millis(occurred_at)),
        traceparent: traceparent.clone(),
        payload: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{full_name}"),
            value: payload.encode_to_vec(),
        }),
    };
    let mut headers = vec![("event_type".to_string(), event_type.to_string())];
    if !traceparent.is_empty() {
        headers.push(("traceparent".to_string(), traceparent));
    }
    PendingEvent {
        event_id,
        record: Outgoing {
            topic: topic.to_string(),
            key: aggregate_id.to_string(),
            payload: Bytes::from(envelope.encode_to_vec()),
            headers,
        },
    }
}
