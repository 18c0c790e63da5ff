//! The in-process event bus of embedded mode.
//!
//! Each topic has a fixed number of partitions, each an append-only log that keeps at most
//! `retention` records (memory stays bounded; a consumer that falls further behind skips
//! to the oldest kept record, as with Kafka retention, and `bus_records_dropped_total`
//! counts it). Consumer groups keep committed offsets per partition. Members of a group
//! split partitions by their join order (partition p goes to member p mod n); when members
//! join or leave, each member resumes its new partitions from the committed offsets, so
//! uncommitted records are delivered again (at least once).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{
    BusError, Delivered, EventBus, Outgoing, Record, Subscription, partition_for, valid_name,
};

#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes waiting subscriptions on every publish and every membership change.
    changed: Notify,
    partitions: u32,
    retention: usize,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Vec<PartitionLog>>,
    /// (group, topic, partition) -> next offset to read.
    committed: HashMap<(String, String, u32), u64>,
    /// (group, topic) -> member ids in join order.
    members: HashMap<(String, String), Vec<u64>>,
    next_member: u64,
}

#[derive(Default)]
struct PartitionLog {
    /// Offset of `records[0]`.
    base: u64,
    records: VecDeque<Record>,
}

impl PartitionLog {
    fn end(&self) -> u64 {
        self.base + self.records.len() as u64
    }
}

impl MemoryBus {
    /// `partitions` per topic; at most `retention` records kept per partition.
    pub fn new(partitions: u32, retention: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                partitions: partitions.max(1),
                retention: retention.max(1),
            }),
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("event bus lock")
    }

    fn logs<'a>(&self, state: &'a mut State, topic: &str) -> &'a mut Vec<PartitionLog> {
        state.topics.entry(topic.to_string()).or_insert_with(|| {
            (0..self.partitions)
                .map(|_| PartitionLog::default())
                .collect()
        })
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, outgoing: Outgoing) -> Result<Delivered, BusError> {
        valid_name(&outgoing.topic)?;
        let partition = partition_for(&outgoing.key, self.shared.partitions);
        let offset = {
            let mut state = self.shared.lock();
            let log = &mut self.shared.logs(&mut state, &outgoing.topic)[partition as usize];
            let offset = log.end();
            log.records.push_back(Record {
                topic: outgoing.topic.clone(),
                partition,
                offset,
                key: outgoing.key,
                payload: outgoing.payload,
                headers: outgoing.headers,
            });
            while log.records.len() > self.shared.retention {
                log.records.pop_front();
                log.base += 1;
            }
            offset
        };
        self.shared.changed.notify_waiters();
        Ok(Delivered { partition, offset })
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError> {
        valid_name(topic)?;
        valid_name(group)?;
        let member = {
            let mut state = self.shared.lock();
            self.shared.logs(&mut state, topic);
            let member = state.next_member;
            state.next_member += 1;
            state
                .members
                .entry((group.to_string(), topic.to_string()))
                .or_default()
                .push(member);
            member
        };
        self.shared.changed.notify_waiters();
        Ok(Box::new(MemorySubscription {
            shared: self.shared.clone(),
            topic: topic.to_string(),
            group: group.to_string(),
            member,
            positions: HashMap::new(),
            assigned: Vec::new(),
            cursor: 0,
        }))
    }
}

struct MemorySubscription {
    shared: Arc<Shared>,
    topic: String,
    group: String,
    member: u64,
    /// Next offset to read per assigned partition (this member's own progress).
    positions: HashMap<u32, u64>,
    assigned: Vec<u32>,
    /// Round-robin start, so one busy partition does not starve the others.
    cursor: usize,
}

impl MemorySubscription {
    /// Recomputes this member's partitions; newly gained ones start at the committed offset.
    fn rebalance(&mut self, state: &State) {
        let members = state
            .members
            .get(&(self.group.clone(), self.topic.clone()))
            .cloned()
            .unwrap_or_default();
        let Some(index) = members.iter().position(|m| *m == self.member) else {
            self.assigned.clear();
            return;
        };
        let assigned: Vec<u32> = (0..self.shared.partitions)
            .filter(|p| *p as usize % members.len() == index)
            .collect();
        if assigned != self.assigned {
            self.positions.clear();
            for partition in &assigned {
                let committed = state
                    .committed
                    .get(&(self.group.clone(), self.topic.clone(), *partition))
                    .copied()
                    .unwrap_or(0);
                self.positions.insert(*partition, committed);
            }
            self.assigned = assigned;
        }
    }

    fn take(&mut self, state: &State) -> Option<Record> {
        let logs = state.topics.get(&self.topic)?;
        let count = self.assigned.len();
        for step in 0..count {
            let partition = self.assigned[(self.cursor + step) % count];
            let log = &logs[partition as usize];
            let position = self.positions.get(&partition).copied().unwrap_or(0);
            let position = if position < log.base {
                metrics::counter!("bus_records_dropped_total", "topic" => self.topic.clone(), "group" => self.group.clone())
                    .increment(log.base - position);
                log.base
            } else {
                position
            };
            if position < log.end() {
                let record = log.records[(position - log.base) as usize].clone();
                self.positions.insert(partition, position + 1);
                self.cursor = (self.cursor + step + 1) % count;
                return Some(record);
            }
        }
        None
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Record, BusError> {
        let shared = self.shared.clone();
        loop {
            // Register for wake-ups before looking, so a publish in between is not missed.
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let state = shared.lock();
                self.rebalance(&state);
                if let Some(record) = self.take(&state) {
                    return Ok(record);
                }
            }
            changed.await;
        }
    }

    async fn commit(&mut self, record: &Record) -> Result<(), BusError> {
        if !self.assigned.contains(&record.partition) {
            return Err(BusError::NotAssigned(record.partition));
        }
        let mut state = self.shared.lock();
        let key = (self.group.clone(), self.topic.clone(), record.partition);
        let next = record.offset + 1;
        let entry = state.committed.entry(key).or_insert(0);
        *entry = (*entry).max(next);
        let committed = *entry;
        // As Kafka defines it: records in the partition after the group's commit.
        if let Some(log) = state
            .topics
            .get(&self.topic)
            .and_then(|logs| logs.get(record.partition as usize))
        {
            metrics::gauge!(
                "events_consumer_lag",
                "topic" => self.topic.clone(),
                "partition" => record.partition.to_string(),
                "group" => self.group.clone(),
            )
            .set(log.end().saturating_sub(committed) as f64);
        }
        Ok(())
    }

    async fn seek(&mut self, partition: u32, offset: u64) -> Result<(), BusError> {
        {
            let shared = self.shared.clone();
            let state = shared.lock();
            self.rebalance(&state);
        }
        if !self.assigned.contains(&partition) {
            return Err(BusError::NotAssigned(partition));
        }
        self.positions.insert(partition, offset);
        Ok(())
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock()
            && let Some(members) = state
                .members
                .get_mut(&(self.group.clone(), self.topic.clone()))
        {
            members.retain(|m| *m != self.member);
        }
        self.shared.changed.notify_waiters();
    }
}
