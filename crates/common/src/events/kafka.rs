//! The event bus on Kafka, through rdkafka (librdkafka).
//!
//! - Publishing: one idempotent producer (`enable.idempotence`, `acks=all`), keyed by the
//!   aggregate id with the murmur2 partitioner (what Java clients use), headers as Kafka
//!   headers. A publish fails after `message.timeout.ms` when no broker takes it, so the
//!   outbox relay backs off and retries.
//! - Topics are created on first use with the configured partitions and replication; one
//!   that exists already is left as it is.
//! - Consuming: one consumer per subscription, in the subscription's group. An offset is
//!   committed only when [`Subscription::commit`] is called (after the effect is stored):
//!   sent at once without waiting, stored for the commit on close, and committed again
//!   when partitions are revoked, so delivery is at least once.
//! - A background task polls each consumer, so heartbeats and rebalances are served even
//!   while the application is busy with a record; it hands records over through a small
//!   queue. `subscribe` returns once the group has given this member its partitions.
//! - Consumer lag per partition comes from librdkafka's statistics, as the
//!   `events_consumer_lag` gauge.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{BusError, Delivered, EventBus, Outgoing, Subscription, valid_name};
use subscription::{GroupContext, KafkaSubscription, poll};

mod subscription;

/// How to reach the cluster and how new topics are made.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port` list, comma-separated.
    pub brokers: String,
    /// Partitions of a topic this bus creates.
    pub partitions: i32,
    /// Replicas of a topic this bus creates.
    pub replication: i32,
    /// How long a publish may wait for the cluster before it fails.
    pub publish_timeout: Duration,
    /// How long the group waits for a silent member before giving its partitions away.
    pub session_timeout: Duration,
    /// Prepended to topic and group names on the cluster (environments sharing one).
    pub prefix: String,
}

impl KafkaSettings {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            partitions: 6,
            replication: 1,
            publish_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            prefix: String::new(),
        }
    }
}

/// The Kafka event bus. Cheap to share: one producer, one admin client.
#[derive(Clone)]
pub struct KafkaBus {
    settings: KafkaSettings,
    producer: FutureProducer,
    admin: Arc<AdminClient<DefaultClientContext>>,
    known_topics: Arc<Mutex<HashSet<String>>>,
}

impl KafkaBus {
    pub fn connect(settings: KafkaSettings) -> Result<Self, BusError> {
        let timeout_ms = settings.publish_timeout.as_millis().to_string();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "2")
            .set("message.timeout.ms", &timeout_ms)
            .create()
            .map_err(unavailable)?;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .create()
            .map_err(unavailable)?;
        Ok(Self {
            settings,
            producer,
            admin: Arc::new(admin),
            known_topics: Arc::default(),
        })
    }

    /// Creates `topic` unless this bus saw it already or the cluster has it.
    async fn ensure_topic(&self, topic: &str) -> Result<(), BusError> {
        valid_name(topic)?;
        if self
            .known_topics
            .lock()
            .expect("topics lock")
            .contains(topic)
        {
            return Ok(());
        }
        if self.topic_exists(topic).await? {
            self.known_topics
                .lock()
                .expect("topics lock")
                .insert(topic.to_string());
            return Ok(());
        }
        let new = NewTopic::new(
            topic,
            self.settings.partitions,
            TopicReplication::Fixed(self.settings.replication),
        );
        let options = AdminOptions::new().operation_timeout(Some(self.settings.publish_timeout));
        let results = self
            .admin
            .create_topics([&new], &options)
            .await
            .map_err(unavailable)?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Unavailable(format!(
                        "creating topic {name}: {code}"
                    )));
                }
            }
        }
        self.known_topics
            .lock()
            .expect("topics lock")
            .insert(topic.to_string());
        Ok(())
    }
}

type Delivery = std::pin::Pin<Box<dyn Future<Output = Result<Delivered, BusError>> + Send>>;

impl KafkaBus {
    /// Queues `record` in the producer (making its topic first if needed) and returns what
    /// resolves when the cluster has it.
    async fn enqueue(&self, record: &Outgoing) -> Result<Delivery, BusError> {
        valid_name(&record.topic)?;
        let topic = format!("{}{}", self.settings.prefix, record.topic);
        self.ensure_topic(&topic).await?;
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let message = FutureRecord::to(&topic)
            .key(record.key.as_bytes())
            .payload(record.payload.as_ref())
            .headers(headers);
        let delivery = self
            .producer
            .send_result(message)
            .map_err(|(error, _)| unavailable(error))?;
        Ok(Box::pin(async move {
            match delivery.await {
                Ok(Ok(delivery)) => Ok(Delivered {
                    partition: u32::try_from(delivery.partition).unwrap_or_default(),
                    offset: u64::try_from(delivery.offset).unwrap_or_default(),
                }),
                Ok(Err((error, _))) => Err(unavailable(error)),
                Err(_) => Err(BusError::Unavailable("the producer was dropped".into())),
            }
        }))
    }

    /// Whether the cluster's metadata lists `topic` with partitions.
    async fn topic_exists(&self, topic: &str) -> Result<bool, BusError> {
        let producer = self.producer.clone();
        let name = topic.to_string();
        let timeout = self.settings.publish_timeout;
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(Some(&name), timeout)
        })
        .await
        .map_err(|error| BusError::Unavailable(error.to_string()))?
        .map_err(unavailable)?;
        Ok(metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    fn system(&self) -> &'static str {
        "kafka"
    }

    async fn publish(&self, record: Outgoing) -> Result<Delivered, BusError> {
        let started = std::time::Instant::now();
        let delivered = self.enqueue(&record).await?.await?;
        metrics::histogram!("events_publish_seconds", "topic" => record.topic)
            .record(started.elapsed().as_secs_f64());
        Ok(delivered)
    }

    /// Hands the whole batch to librdkafka at once (it keeps the order per partition and,
    /// being idempotent, never duplicates or reorders on retry), then waits for each.
    async fn publish_all(&self, records: &[Outgoing]) -> (usize, Option<BusError>) {
        let started = std::time::Instant::now();
        let mut deliveries: Vec<Delivery> = Vec::with_capacity(records.len());
        for record in records {
            match self.enqueue(record).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(error) => {
                    deliveries.push(Box::pin(std::future::ready(Err(error))));
                    break;
                }
            }
        }
        let mut count = 0;
        for delivery in deliveries {
            if let Err(error) = delivery.await {
                return (count, Some(error));
            }
            count += 1;
        }
        if count > 0 {
            metrics::histogram!("events_publish_batch_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        (count, None)
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError> {
        valid_name(topic)?;
        valid_name(group)?;
        let logical_topic = topic;
        let topic = &format!("{}{topic}", self.settings.prefix);
        let group = &format!("{}{group}", self.settings.prefix);
        self.ensure_topic(topic).await?;
        let (assigned_tx, mut assigned_rx) = watch::channel(false);
        let context = GroupContext {
            group: group.to_string(),
            assigned: assigned_tx,
        };
        let consumer: StreamConsumer<GroupContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.settings.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                self.settings.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.settings.session_timeout / 3).as_millis().to_string(),
            )
            .set("fetch.wait.max.ms", "50")
            .set("statistics.interval.ms", "5000")
            .create_with_context(context)
            .map_err(unavailable)?;
        consumer.subscribe(&[topic]).map_err(unavailable)?;
        let consumer = Arc::new(consumer);
        let (records_tx, records_rx) = mpsc::channel(64);
        let (seeks_tx, seeks_rx) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let (poller_alive, poller_done) = std::sync::mpsc::channel::<()>();
        tokio::spawn(poll(
            poller_alive,
            consumer.clone(),
            topic.to_string(),
            logical_topic.to_string(),
            records_tx,
            seeks_rx,
            stop.clone(),
        ));
        // Until the group has assigned partitions, records published now would be read
        // from `auto.offset.reset` anyway; waiting makes "subscribed" mean "a member".
        let joined = tokio::time::timeout(
            Duration::from_secs(30),
            assigned_rx.wait_for(|assigned| *assigned),
        )
        .await;
        if !matches!(joined, Ok(Ok(_))) {
            stop.cancel();
            return Err(BusError::Unavailable(format!(
                "group {group} did not assign partitions of {topic} within 30 s"
            )));
        }
        Ok(Box::new(KafkaSubscription {
            topic: topic.to_string(),
            consumer,
            records: records_rx,
            seeks: seeks_tx,
            epoch: 0,
            stash: VecDeque::new(),
            stop,
            poller_done,
        }))
    }
}

pub(super) fn unavailable(error: KafkaError) -> BusError {
    BusError::Unavailable(error.to_string())
}
