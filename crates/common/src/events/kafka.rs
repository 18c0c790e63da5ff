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
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{BusError, Delivered, EventBus, Outgoing, Record, Subscription, valid_name};

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

/// Tells the subscription when the group has assigned it partitions, and reports lag.
struct GroupContext {
    group: String,
    assigned: watch::Sender<bool>,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                // librdkafka reports -1 for partitions this member does not consume.
                if *partition < 0 || stats.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(
                    "events_consumer_lag",
                    "topic" => topic.clone(),
                    "partition" => partition.to_string(),
                    "group" => self.group.clone(),
                )
                .set(stats.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Hand the partitions over with everything done so far committed, so the next
        // owner starts where this member stopped.
        if let Rebalance::Revoke(_) = rebalance {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                // Brokers that refuse commits once the rebalance started: what was not
                // committed is delivered again, and the idempotent consumer skips it.
                Err(error) => {
                    tracing::debug!(%error, group = %self.group, "committing offsets on revoke failed");
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.assigned.send_replace(true);
        }
    }
}

/// A replay request: the poller seeks, bumps its epoch and answers.
struct Seek {
    partition: i32,
    offset: i64,
    done: oneshot::Sender<Result<u64, BusError>>,
}

/// Polls `consumer` (reading `topic`, known to the application as `logical_topic`) until
/// `stop`, handing records (tagged with the seek epoch they were read in) to the
/// subscription.
async fn poll(
    alive: std::sync::mpsc::Sender<()>,
    consumer: Arc<StreamConsumer<GroupContext>>,
    topic: String,
    logical_topic: String,
    records: mpsc::Sender<(u64, Result<Record, BusError>)>,
    seeks: mpsc::Receiver<Seek>,
    stop: CancellationToken,
) {
    poll_until_stopped(&consumer, topic, logical_topic, records, seeks, stop).await;
    // Let go of the consumer before saying so.
    drop(consumer);
    drop(alive);
}

async fn poll_until_stopped(
    consumer: &StreamConsumer<GroupContext>,
    topic: String,
    logical_topic: String,
    records: mpsc::Sender<(u64, Result<Record, BusError>)>,
    mut seeks: mpsc::Receiver<Seek>,
    stop: CancellationToken,
) {
    let mut epoch = 0u64;
    loop {
        let read = tokio::select! {
            () = stop.cancelled() => return,
            seek = seeks.recv() => {
                let Some(seek) = seek else { return };
                let result = consumer
                    .seek(&topic, seek.partition, Offset::Offset(seek.offset), Duration::from_secs(10))
                    .map_err(|error| match error {
                        KafkaError::Seek(_) => BusError::NotAssigned(u32::try_from(seek.partition).unwrap_or_default()),
                        other => unavailable(other),
                    });
                epoch += 1;
                let _ = seek.done.send(result.map(|()| epoch));
                continue;
            }
            message = consumer.recv() => message.map(|message| Record {
                topic: logical_topic.clone(),
                partition: u32::try_from(message.partition()).unwrap_or_default(),
                offset: u64::try_from(message.offset()).unwrap_or_default(),
                key: message
                    .key()
                    .map(|key| String::from_utf8_lossy(key).into_owned())
                    .unwrap_or_default(),
                payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                headers: message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|header| {
                                (
                                    header.key.to_string(),
                                    String::from_utf8_lossy(header.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
        };
        let read = match read {
            Ok(record) => Ok(record),
            // librdkafka reports a broker going away, then reconnects by itself: worth a
            // warning, not a new subscription.
            Err(KafkaError::MessageConsumption(code)) => {
                tracing::warn!(%code, topic = %logical_topic, "Kafka consumer error; librdkafka retries");
                continue;
            }
            Err(error) => Err(unavailable(error)),
        };
        tokio::select! {
            () = stop.cancelled() => return,
            sent = records.send((epoch, read)) => if sent.is_err() { return },
        }
    }
}

struct KafkaSubscription {
    topic: String,
    consumer: Arc<StreamConsumer<GroupContext>>,
    records: mpsc::Receiver<(u64, Result<Record, BusError>)>,
    seeks: mpsc::Sender<Seek>,
    /// Records read before the latest seek are stale.
    epoch: u64,
    /// Records of the current epoch that arrived while a seek was being answered.
    stash: VecDeque<Result<Record, BusError>>,
    stop: CancellationToken,
    /// Disconnects when the poller has let go of the consumer.
    poller_done: std::sync::mpsc::Receiver<()>,
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        // The poller drops its handle, then ours is the last: dropping it closes the
        // consumer here and now (commits the stored offsets, leaves the group), so a member
        // that joins next does not wait for this one to time out. On a single-threaded
        // runtime the poller cannot run while we wait, so it closes the consumer itself,
        // a moment later.
        self.stop.cancel();
        let multi_thread = tokio::runtime::Handle::try_current().is_ok_and(|handle| {
            handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        });
        if multi_thread {
            tokio::task::block_in_place(|| {
                let _ = self.poller_done.recv_timeout(Duration::from_secs(5));
            });
        }
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Result<Record, BusError> {
        if let Some(record) = self.stash.pop_front() {
            return record;
        }
        loop {
            let Some((epoch, record)) = self.records.recv().await else {
                return Err(BusError::Unavailable("the Kafka consumer stopped".into()));
            };
            if epoch == self.epoch {
                return record;
            }
        }
    }

    async fn commit(&mut self, record: &Record) -> Result<(), BusError> {
        let partition =
            i32::try_from(record.partition).map_err(|_| BusError::NotAssigned(record.partition))?;
        let offset = i64::try_from(record.offset)
            .map_err(|_| BusError::Unavailable("offset out of range".into()))?;
        // The next offset to read. Stored, so that closing commits it whatever happens, and
        // sent now without waiting for the broker, so that a rebalance that starts later
        // finds it committed.
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, partition, Offset::Offset(offset + 1))
            .map_err(unavailable)?;
        self.consumer
            .store_offsets(&list)
            .map_err(|error| match error {
                KafkaError::StoreOffset(RDKafkaErrorCode::State) => {
                    BusError::NotAssigned(record.partition)
                }
                other => unavailable(other),
            })?;
        self.consumer
            .commit(&list, CommitMode::Async)
            .map_err(unavailable)
    }

    async fn seek(&mut self, partition: u32, offset: u64) -> Result<(), BusError> {
        let (done, mut answer) = oneshot::channel();
        let request = Seek {
            partition: i32::try_from(partition).map_err(|_| BusError::NotAssigned(partition))?,
            offset: i64::try_from(offset)
                .map_err(|_| BusError::Unavailable("offset out of range".into()))?,
            done,
        };
        self.seeks
            .send(request)
            .await
            .map_err(|_| BusError::Unavailable("the Kafka consumer stopped".into()))?;
        // Keep the queue moving so the poller can take the request; what it read before
        // the seek is dropped, what it reads after is kept.
        let mut early = Vec::new();
        let epoch = loop {
            tokio::select! {
                answer = &mut answer => {
                    break answer.map_err(|_| BusError::Unavailable("the Kafka consumer stopped".into()))??;
                }
                Some(read) = self.records.recv() => early.push(read),
            }
        };
        self.epoch = epoch;
        self.stash = early
            .into_iter()
            .filter(|(read_in, _)| *read_in == epoch)
            .map(|(_, record)| record)
            .collect();
        Ok(())
    }
}

fn unavailable(error: KafkaError) -> BusError {
    BusError::Unavailable(error.to_string())
}
