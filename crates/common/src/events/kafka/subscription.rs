//! The consuming side: a consumer per subscription, polled by a background task that
//! serves heartbeats and rebalances, hands records over through a small queue, seeks on
//! replay and commits what the application says it stored.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::super::{BusError, Record, Subscription};

use super::unavailable;

/// Tells the subscription when the group has assigned it partitions, and reports lag.
pub(super) struct GroupContext {
    pub(super) group: String,
    pub(super) assigned: watch::Sender<bool>,
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
pub(super) struct Seek {
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) done: oneshot::Sender<Result<u64, BusError>>,
}

/// Polls `consumer` (reading `topic`, known to the application as `logical_topic`) until
/// `stop`, handing records (tagged with the seek epoch they were read in) to the
/// subscription.
pub(super) async fn poll(
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

pub(super) async fn poll_until_stopped(
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

pub(super) struct KafkaSubscription {
    pub(super) topic: String,
    pub(super) consumer: Arc<StreamConsumer<GroupContext>>,
    pub(super) records: mpsc::Receiver<(u64, Result<Record, BusError>)>,
    pub(super) seeks: mpsc::Sender<Seek>,
    /// Records read before the latest seek are stale.
    pub(super) epoch: u64,
    /// Records of the current epoch that arrived while a seek was being answered.
    pub(super) stash: VecDeque<Result<Record, BusError>>,
    pub(super) stop: CancellationToken,
    /// Disconnects when the poller has let go of the consumer.
    pub(super) poller_done: std::sync::mpsc::Receiver<()>,
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
