//! Keeping the bus file in shape while the bus runs: group commits written every
//! [`FLUSH_EVERY`], records every known group has read deleted, the WAL checkpointed.

use std::sync::Weak;

use sqlx::Sqlite;

use super::{FLUSH_EVERY, FLUSHES_PER_CLEANUP, GroupTopic, Ranges, Shared, UNREAD_RETENTION};
use crate::time::now_millis;

/// While the bus is in use: writes commits every [`FLUSH_EVERY`]; once a second applies
/// retention (when commits moved) and checkpoints the WAL into the file.
pub(super) async fn keep_up(shared: Weak<Shared>) {
    let mut ticks: u64 = 0;
    let mut moved = false;
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        ticks += 1;
        match shared.flush().await {
            Ok(flushed) => moved |= flushed,
            Err(error) => {
                tracing::warn!(%error, "event bus: writing consumer offsets failed; retrying");
            }
        }
        if !ticks.is_multiple_of(FLUSHES_PER_CLEANUP) {
            continue;
        }
        // Age-based retention of unread topics needs no commit to trigger it.
        if moved || ticks.is_multiple_of(60 * FLUSHES_PER_CLEANUP) {
            match shared.apply_retention().await {
                Ok(()) => moved = false,
                Err(error) => tracing::warn!(%error, "event bus: retention failed; retrying"),
            }
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&shared.reader)
            .await
        {
            tracing::warn!(%error, "event bus: checkpoint failed; retrying");
        }
    }
}

impl Shared {
    /// Writes the commits not yet in the file; says whether there were any.
    pub(super) async fn flush(&self) -> Result<bool, sqlx::Error> {
        let pending: Vec<(GroupTopic, Vec<u64>)> = {
            let mut state = self.lock();
            let dirty: Vec<GroupTopic> = state.dirty.drain().collect();
            dirty
                .into_iter()
                .filter_map(|key| {
                    let offsets = state.committed.get(&key)?.clone();
                    Some((key, offsets))
                })
                .collect()
        };
        if pending.is_empty() {
            return Ok(false);
        }
        let written = async {
            let mut tx = self.writer.begin().await?;
            for ((group, topic), offsets) in &pending {
                for (partition, next) in offsets.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO bus_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                    )
                    .bind(group)
                    .bind(topic)
                    .bind(partition as i64)
                    .bind(*next as i64)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await
        }
        .await;
        let mut state = self.lock();
        match written {
            Ok(()) => {
                for (key, offsets) in pending {
                    state.stored.insert(key, offsets);
                }
                Ok(true)
            }
            Err(error) => {
                state.dirty.extend(pending.into_iter().map(|(key, _)| key));
                Err(error)
            }
        }
    }

    /// Deletes the records every known group has committed past (by the offsets in the
    /// file), and records of unread topics older than [`UNREAD_RETENTION`].
    pub(super) async fn apply_retention(&self) -> Result<(), sqlx::Error> {
        let partitions = self.settings.partitions as usize;
        let plan: Vec<(String, Option<Ranges>)> = {
            let state = self.lock();
            state
                .ends
                .keys()
                .map(|topic| {
                    let floor = state
                        .stored
                        .iter()
                        .filter(|((_, of), _)| of == topic)
                        .map(|(_, offsets)| offsets.clone())
                        .reduce(|low, offsets| {
                            low.iter().zip(&offsets).map(|(a, b)| *a.min(b)).collect()
                        });
                    let cut = state.cut.get(topic);
                    let ranges = floor.map(|floor| {
                        (0..partitions)
                            .map(|p| (cut.map_or(0, |cut| cut[p]), floor[p]))
                            .collect()
                    });
                    (topic.clone(), ranges)
                })
                .collect()
        };
        let oldest_unread = now_millis() - UNREAD_RETENTION.as_millis() as i64;
        let mut tx = self.writer.begin().await?;
        let mut freed: i64 = 0;
        for (topic, ranges) in &plan {
            match ranges {
                Some(ranges) => {
                    for (partition, (from, below)) in ranges.iter().enumerate() {
                        if from >= below {
                            continue;
                        }
                        let range = "partition = $2 AND record_offset >= $3 AND record_offset < $4";
                        let values = [partition as i64, *from as i64, *below as i64];
                        freed += delete(&mut tx, topic, range, &values).await?;
                    }
                }
                None => {
                    freed += delete(&mut tx, topic, "published_at < $2", &[oldest_unread]).await?;
                }
            }
        }
        tx.commit().await?;
        let retained = {
            let mut state = self.lock();
            for (topic, ranges) in plan {
                if let Some(ranges) = ranges {
                    let below = ranges
                        .iter()
                        .map(|(from, below)| *from.max(below))
                        .collect();
                    state.cut.insert(topic, below);
                }
            }
            state.retained_bytes = state.retained_bytes.saturating_sub(freed as u64);
            state.retained_bytes
        };
        if freed > 0 {
            self.record_size(retained);
        }
        Ok(())
    }
}

/// Deletes the records of `topic` that match `condition` (parameters from `$2`); says how
/// many bytes that freed.
async fn delete(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    topic: &str,
    condition: &str,
    values: &[i64],
) -> Result<i64, sqlx::Error> {
    let clause = format!("FROM bus_records WHERE topic = $1 AND {condition}");
    let sum = format!("SELECT COALESCE(SUM(size), 0) {clause}");
    let mut size = sqlx::query_scalar::<_, i64>(&sum).bind(topic);
    for value in values {
        size = size.bind(*value);
    }
    let size = size.fetch_one(&mut **tx).await?;
    if size > 0 {
        let sql = format!("DELETE {clause}");
        let mut delete = sqlx::query(&sql).bind(topic);
        for value in values {
            delete = delete.bind(*value);
        }
        delete.execute(&mut **tx).await?;
    }
    Ok(size)
}
