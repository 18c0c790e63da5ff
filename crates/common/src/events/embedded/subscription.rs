//! A member of a consumer group: its share of the partitions (recomputed when members
//! join or leave), its own read positions, and a batch of records read from the file.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;

use super::{GroupTopic, Shared, State};
use crate::events::{BusError, Record, Subscription};

pub(super) struct EmbeddedSubscription {
    shared: Arc<Shared>,
    /// (group, topic)
    key: GroupTopic,
    member: u64,
    /// Next offset to read per assigned partition (this member's own progress).
    positions: HashMap<u32, u64>,
    assigned: Vec<u32>,
    /// Round-robin start, so one busy partition does not starve the others.
    cursor: usize,
    /// Records read from the file and not yet handed out, of one partition, in order.
    buffer: VecDeque<Record>,
}

impl EmbeddedSubscription {
    /// Member `member` of `key`'s group, already counted among its members.
    pub(super) fn new(shared: Arc<Shared>, key: GroupTopic, member: u64) -> Self {
        Self {
            shared,
            key,
            member,
            positions: HashMap::new(),
            assigned: Vec::new(),
            cursor: 0,
            buffer: VecDeque::new(),
        }
    }

    /// Recomputes this member's partitions; newly gained ones start at the committed offset.
    fn rebalance(&mut self, state: &State) {
        let members = state.members.get(&self.key).cloned().unwrap_or_default();
        let Some(index) = members.iter().position(|m| *m == self.member) else {
            self.assigned.clear();
            self.buffer.clear();
            return;
        };
        let assigned: Vec<u32> = (0..self.shared.settings.partitions)
            .filter(|p| *p as usize % members.len() == index)
            .collect();
        if assigned != self.assigned {
            self.positions.clear();
            self.buffer.clear();
            let committed = state.committed.get(&self.key);
            for partition in &assigned {
                let next = committed.map_or(0, |offsets| offsets[*partition as usize]);
                self.positions.insert(*partition, next);
            }
            self.assigned = assigned;
        }
    }

    /// The next assigned partition with records to read: (partition, from, end).
    fn due(&mut self, state: &State) -> Option<(u32, u64, u64)> {
        let ends = state.ends.get(&self.key.1)?;
        let count = self.assigned.len();
        (0..count).find_map(|step| {
            let partition = self.assigned[(self.cursor + step) % count];
            let from = self.positions.get(&partition).copied().unwrap_or(0);
            let end = ends[partition as usize];
            (from < end).then(|| {
                self.cursor = (self.cursor + step + 1) % count;
                (partition, from, end)
            })
        })
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next(&mut self) -> Result<Record, BusError> {
        let shared = self.shared.clone();
        loop {
            // Register for wake-ups before looking, so a publish in between is not missed.
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let due = {
                let state = shared.lock();
                self.rebalance(&state);
                if let Some(record) = self.buffer.pop_front() {
                    self.positions.insert(record.partition, record.offset + 1);
                    return Ok(record);
                }
                self.due(&state)
            };
            let Some((partition, from, end)) = due else {
                changed.await;
                continue;
            };
            let records = shared.read(&self.key.1, partition, from, end).await?;
            if records.is_empty() {
                // Deleted by retention (a seek before the oldest kept record): skip ahead.
                self.positions.insert(partition, end);
            }
            self.buffer.extend(records);
        }
    }

    async fn commit(&mut self, record: &Record) -> Result<(), BusError> {
        if !self.assigned.contains(&record.partition) {
            return Err(BusError::NotAssigned(record.partition));
        }
        let mut state = self.shared.lock();
        let partition = record.partition as usize;
        let Some(offsets) = state.committed.get_mut(&self.key) else {
            return Err(BusError::NotAssigned(record.partition));
        };
        offsets[partition] = offsets[partition].max(record.offset + 1);
        let committed = offsets[partition];
        state.dirty.insert(self.key.clone());
        // As Kafka defines it: records in the partition after the group's commit.
        let end = state
            .ends
            .get(&self.key.1)
            .map_or(0, |ends| ends[partition]);
        metrics::gauge!(
            "events_consumer_lag",
            "topic" => self.key.1.clone(),
            "partition" => record.partition.to_string(),
            "group" => self.key.0.clone(),
        )
        .set(end.saturating_sub(committed) as f64);
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
        self.buffer.clear();
        self.positions.insert(partition, offset);
        Ok(())
    }
}

impl Drop for EmbeddedSubscription {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock()
            && let Some(members) = state.members.get_mut(&self.key)
        {
            members.retain(|m| *m != self.member);
        }
        self.shared.changed.notify_waiters();
    }
}
