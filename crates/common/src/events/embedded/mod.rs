//! The embedded event bus: Kafka-like topics, keyed partitions, consumer groups and offsets
//! in one SQLite file of the data directory, for `duovarsity up` (one process, no
//! infrastructure).
//!
//! What it promises, so that the outbox's "committed means delivered" holds without Kafka:
//! - **Acknowledged means stored.** `publish` returns only after the records are committed
//!   to the file, so a record the bus accepted survives a crash of the process (SIGKILL
//!   included): the relay marks its outbox row sent only after that.
//! - **Nothing is deleted while a group needs it.** A record is deleted only once every
//!   consumer group known on its topic has committed past it. A group is known from its
//!   first subscription on, across restarts (its offsets are in the file). A topic no group
//!   has ever subscribed to (dead-letter topics, events nobody reads in this deployment)
//!   keeps its records for [`UNREAD_RETENTION`].
//! - **Backpressure instead of loss.** The file keeps at most `max_bytes` of records. Past
//!   that, publishing fails with [`BusError::Full`]: the outbox relays back off and their
//!   backlogs grow (`outbox_backlog`) until the consumers catch up. `bus_retained_bytes`
//!   against `bus_max_bytes` shows how close it is.
//! - **At least once.** Commits are kept in memory and written to the file every
//!   [`FLUSH_EVERY`] and on [`EventBus::close`]; after a crash a group resumes from the last
//!   written offsets, so the records of that last moment come again (consumers are
//!   idempotent).
//!
//! Like the service databases, the file runs in WAL mode with `synchronous=NORMAL`: a crash
//! of the process loses nothing committed; a crash of the operating system or a power loss
//! may lose the last transactions. Across machines, use Kafka.
//!
//! Members of a group split partitions by their join order (partition p goes to member
//! p mod n); when members join or leave, each member resumes its new partitions from the
//! committed offsets. Records are read from the file in batches, so memory does not grow
//! with the backlog.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio::sync::Notify;

mod subscription;
mod upkeep;

use super::{
    BusError, Delivered, EventBus, Outgoing, Record, Subscription, partition_for, valid_name,
};
use crate::time::now_millis;
use subscription::EmbeddedSubscription;
use upkeep::keep_up;

/// How often committed offsets are written to the file.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Retention and WAL checkpoints run every this many flushes (once a second).
const FLUSHES_PER_CLEANUP: u64 = 10;
/// How long records of a topic that no group has ever read are kept.
pub const UNREAD_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Records one subscription reads from the file at a time.
const READ_BATCH: i64 = 256;
/// Records per INSERT statement (SQLite binds at most 32,766 parameters).
const INSERT_ROWS: usize = 500;
/// The longest wait for the file's connection before a call fails.
const DEADLINE: Duration = Duration::from_secs(5);
/// The file's layout; `PRAGMA user_version` says which one a file has.
const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS bus_records (
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        record_offset INTEGER NOT NULL,
        record_key TEXT NOT NULL,
        payload BLOB NOT NULL,
        headers TEXT NOT NULL,
        size INTEGER NOT NULL,
        published_at INTEGER NOT NULL,
        PRIMARY KEY (topic, partition, record_offset)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS bus_offsets (
        consumer_group TEXT NOT NULL,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        next_offset INTEGER NOT NULL,
        PRIMARY KEY (consumer_group, topic, partition)
    ) WITHOUT ROWID;";

/// How the embedded bus is laid out and bounded.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedSettings {
    /// Partitions per topic. A file keeps the count it was created with.
    pub partitions: u32,
    /// The most record bytes (key, payload and headers) the file keeps.
    pub max_bytes: u64,
}

impl Default for EmbeddedSettings {
    fn default() -> Self {
        Self {
            partitions: 8,
            max_bytes: 1 << 30,
        }
    }
}

#[derive(Clone)]
pub struct EmbeddedBus {
    shared: Arc<Shared>,
}

struct Shared {
    /// Held (locked) until the bus is closed or dropped: one process per file.
    lock: Mutex<Option<std::fs::File>>,
    /// One connection: SQLite has one writer, and offsets are assigned in write order.
    writer: SqlitePool,
    reader: SqlitePool,
    state: Mutex<State>,
    /// Held across assigning offsets and committing them, so offsets follow write order.
    publishing: tokio::sync::Mutex<()>,
    /// Wakes waiting subscriptions on every publish and every membership change.
    changed: Notify,
    settings: EmbeddedSettings,
}

type GroupTopic = (String, String);
/// Per partition, the offsets `[from, below)` retention deletes; `None` for a topic no
/// group reads, whose records go by age.
type Ranges = Vec<(u64, u64)>;

#[derive(Default)]
struct State {
    /// topic -> the next offset of each partition.
    ends: HashMap<String, Vec<u64>>,
    /// (group, topic) -> the next offset to read in each partition, as committed.
    committed: HashMap<GroupTopic, Vec<u64>>,
    /// The commits as last written to the file: what retention may rely on.
    stored: HashMap<GroupTopic, Vec<u64>>,
    /// Groups whose commits are not in the file yet.
    dirty: HashSet<GroupTopic>,
    /// topic -> per partition, the offset below which retention has deleted everything.
    cut: HashMap<String, Vec<u64>>,
    /// (group, topic) -> member ids in join order.
    members: HashMap<GroupTopic, Vec<u64>>,
    next_member: u64,
    retained_bytes: u64,
}

impl State {
    fn ends(&mut self, topic: &str, partitions: u32) -> &mut Vec<u64> {
        self.ends
            .entry(topic.to_string())
            .or_insert_with(|| vec![0; partitions as usize])
    }
}

impl EmbeddedBus {
    /// Opens (or creates) the bus file at `path` and starts writing commits and applying
    /// retention in the background until the last handle is dropped.
    pub async fn open(path: &Path, settings: EmbeddedSettings) -> Result<Self, BusError> {
        let lock = lock(path).await?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Checkpoints run in the background task, so publishers never wait for one.
            .pragma("wal_autocheckpoint", "0")
            .busy_timeout(DEADLINE);
        let pool = |connections: u32| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(DEADLINE)
                .test_before_acquire(false)
                .connect_with(options.clone())
        };
        let opening = |error: sqlx::Error| {
            BusError::Unavailable(format!("opening {}: {error}", path.display()))
        };
        let writer = pool(1).await.map_err(opening)?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&writer)
            .await
            .map_err(opening)?;
        if version > SCHEMA_VERSION {
            return Err(BusError::Unavailable(format!(
                "{} was written by a newer Duovarsity (bus schema {version})",
                path.display()
            )));
        }
        sqlx::raw_sql(SCHEMA)
            .execute(&writer)
            .await
            .map_err(opening)?;
        sqlx::raw_sql(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .execute(&writer)
            .await
            .map_err(opening)?;
        let reader = pool(2).await.map_err(opening)?;
        let state = load(&writer, settings.partitions)
            .await
            .map_err(|error| BusError::Unavailable(format!("{}: {error}", path.display())))?;
        let shared = Arc::new(Shared {
            lock: Mutex::new(Some(lock)),
            writer,
            reader,
            state: Mutex::new(state),
            publishing: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
            settings,
        });
        shared.record_size(shared.lock().retained_bytes);
        tokio::spawn(keep_up(Arc::downgrade(&shared)));
        Ok(Self { shared })
    }

    /// Record bytes the file keeps now.
    pub fn retained_bytes(&self) -> u64 {
        self.shared.lock().retained_bytes
    }

    /// Writes commits to the file and deletes what every group has read, now rather than
    /// at the next [`FLUSH_EVERY`] tick.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.shared.flush().await.map_err(unavailable)?;
        self.shared.apply_retention().await.map_err(unavailable)
    }
}

/// Locks `<path>.lock`: offsets are assigned in memory, so two processes (or two buses in
/// one process) on one file would hand out the same offsets. Waits up to a second for a
/// bus of this process that is being dropped (its background task may be finishing a
/// flush).
async fn lock(path: &Path) -> Result<std::fs::File, BusError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::File::create(&name).map_err(|error| {
        BusError::Unavailable(format!("creating {}: {error}", Path::new(&name).display()))
    })?;
    for _ in 0..100 {
        if file.try_lock().is_ok() {
            return Ok(file);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(BusError::Unavailable(format!(
        "{} is in use by another bus (one process per data directory; across processes use Kafka)",
        path.display()
    )))
}

/// The file's state at open: partition ends, group offsets, the bytes kept.
async fn load(writer: &SqlitePool, partitions: u32) -> Result<State, String> {
    let mut state = State::default();
    let check = |partition: i64| {
        if partition >= i64::from(partitions) {
            Err(format!(
                "the file has partition {partition}, but the bus runs {partitions} per topic"
            ))
        } else {
            Ok(partition as usize)
        }
    };
    let ends = sqlx::query(
        "SELECT topic, partition, MAX(record_offset) + 1 AS next FROM bus_records GROUP BY topic, partition",
    )
    .fetch_all(writer)
    .await
    .map_err(|e| e.to_string())?;
    for row in ends {
        let partition = check(row.get("partition"))?;
        state.ends(row.get("topic"), partitions)[partition] = row.get::<i64, _>("next") as u64;
    }
    let offsets =
        sqlx::query("SELECT consumer_group, topic, partition, next_offset FROM bus_offsets")
            .fetch_all(writer)
            .await
            .map_err(|e| e.to_string())?;
    for row in offsets {
        let partition = check(row.get("partition"))?;
        let (group, topic): (String, String) = (row.get("consumer_group"), row.get("topic"));
        let next = row.get::<i64, _>("next_offset") as u64;
        // Retention deletes only below every group's commit, so an emptied partition ends
        // at the furthest commit.
        let end = &mut state.ends(&topic, partitions)[partition];
        *end = (*end).max(next);
        for offsets in [&mut state.committed, &mut state.stored] {
            offsets
                .entry((group.clone(), topic.clone()))
                .or_insert_with(|| vec![0; partitions as usize])[partition] = next;
        }
    }
    state.retained_bytes =
        sqlx::query_scalar::<_, i64>("SELECT COALESCE(SUM(size), 0) FROM bus_records")
            .fetch_one(writer)
            .await
            .map_err(|e| e.to_string())? as u64;
    Ok(state)
}

fn unavailable(error: sqlx::Error) -> BusError {
    BusError::Unavailable(format!("the embedded bus file: {error}"))
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("event bus lock")
    }

    fn record_size(&self, retained: u64) {
        metrics::gauge!("bus_retained_bytes").set(retained as f64);
        metrics::gauge!("bus_max_bytes").set(self.settings.max_bytes as f64);
    }

    /// Stores `records` in order, as many as fit under `max_bytes`, and says where each
    /// landed, with the error that stopped it.
    async fn append(&self, records: &[Outgoing]) -> (Vec<Delivered>, Option<BusError>) {
        let valid = records
            .iter()
            .position(|record| valid_name(&record.topic).is_err())
            .unwrap_or(records.len());
        let _publishing = self.publishing.lock().await;
        let mut stopped =
            (valid < records.len()).then(|| BusError::InvalidName(records[valid].topic.clone()));
        let (rows, delivered, added) = {
            let mut state = self.lock();
            let mut room = self.settings.max_bytes.saturating_sub(state.retained_bytes);
            let mut ends: HashMap<&str, Vec<u64>> = HashMap::new();
            let mut rows = Vec::new();
            let mut delivered = Vec::new();
            let mut added = 0;
            for record in &records[..valid] {
                let headers = serde_json::to_string(&record.headers).unwrap_or_default();
                let size = (record.key.len() + record.payload.len() + headers.len()) as u64;
                if size > room {
                    metrics::counter!("bus_publish_refused_total").increment(1);
                    stopped = Some(BusError::Full {
                        retained: state.retained_bytes + added,
                        limit: self.settings.max_bytes,
                    });
                    break;
                }
                room -= size;
                added += size;
                let partition = partition_for(&record.key, self.settings.partitions);
                let next = ends
                    .entry(&record.topic)
                    .or_insert_with(|| state.ends(&record.topic, self.settings.partitions).clone());
                let offset = next[partition as usize];
                next[partition as usize] += 1;
                delivered.push(Delivered { partition, offset });
                rows.push((record, headers, size, partition, offset));
            }
            (rows, delivered, added)
        };
        if rows.is_empty() {
            return (delivered, stopped);
        }
        if let Err(error) = self.insert(&rows).await {
            return (Vec::new(), Some(unavailable(error)));
        }
        let retained = {
            let mut state = self.lock();
            for (record, _, _, partition, offset) in &rows {
                let end =
                    &mut state.ends(&record.topic, self.settings.partitions)[*partition as usize];
                *end = (*end).max(offset + 1);
            }
            state.retained_bytes += added;
            state.retained_bytes
        };
        self.record_size(retained);
        self.changed.notify_waiters();
        (delivered, stopped)
    }

    async fn insert(&self, rows: &[(&Outgoing, String, u64, u32, u64)]) -> Result<(), sqlx::Error> {
        let now = now_millis();
        let mut tx = self.writer.begin().await?;
        for chunk in rows.chunks(INSERT_ROWS) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO bus_records (topic, partition, record_offset, record_key, payload, headers, size, published_at) ",
            );
            insert.push_values(
                chunk,
                |mut row, (record, headers, size, partition, offset)| {
                    row.push_bind(&record.topic)
                        .push_bind(i64::from(*partition))
                        .push_bind(*offset as i64)
                        .push_bind(&record.key)
                        .push_bind(record.payload.as_ref())
                        .push_bind(headers)
                        .push_bind(*size as i64)
                        .push_bind(now);
                },
            );
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Up to [`READ_BATCH`] records of one partition from `from`, below `end`.
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        end: u64,
    ) -> Result<Vec<Record>, BusError> {
        let rows = sqlx::query(
            "SELECT record_offset, record_key, payload, headers FROM bus_records \
             WHERE topic = $1 AND partition = $2 AND record_offset >= $3 AND record_offset < $4 \
             ORDER BY record_offset LIMIT $5",
        )
        .bind(topic)
        .bind(i64::from(partition))
        .bind(from as i64)
        .bind(end as i64)
        .bind(READ_BATCH)
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let headers: String = row.get("headers");
                Ok(Record {
                    topic: topic.to_string(),
                    partition,
                    offset: row.get::<i64, _>("record_offset") as u64,
                    key: row.get("record_key"),
                    payload: Bytes::from(row.get::<Vec<u8>, _>("payload")),
                    headers: serde_json::from_str(&headers).map_err(|error| {
                        BusError::Unavailable(format!("a stored record's headers: {error}"))
                    })?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl EventBus for EmbeddedBus {
    async fn publish(&self, record: Outgoing) -> Result<Delivered, BusError> {
        let (delivered, error) = self.shared.append(std::slice::from_ref(&record)).await;
        match (delivered.first(), error) {
            (Some(delivered), _) => Ok(*delivered),
            (None, Some(error)) => Err(error),
            (None, None) => unreachable!("one record is either stored or refused"),
        }
    }

    async fn publish_all(&self, records: &[Outgoing]) -> (usize, Option<BusError>) {
        let (delivered, error) = self.shared.append(records).await;
        (delivered.len(), error)
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError> {
        valid_name(topic)?;
        valid_name(group)?;
        let partitions = self.shared.settings.partitions;
        let key = (group.to_string(), topic.to_string());
        let member = {
            let mut state = self.shared.lock();
            state.ends(topic, partitions);
            if !state.committed.contains_key(&key) {
                // A new group starts at the oldest kept record and is remembered from now.
                state
                    .committed
                    .insert(key.clone(), vec![0; partitions as usize]);
                state.dirty.insert(key.clone());
            }
            let member = state.next_member;
            state.next_member += 1;
            state.members.entry(key.clone()).or_default().push(member);
            member
        };
        self.shared.changed.notify_waiters();
        Ok(Box::new(EmbeddedSubscription::new(
            self.shared.clone(),
            key,
            member,
        )))
    }

    async fn close(&self) {
        if let Err(error) = self.flush().await {
            tracing::warn!(%error, "event bus: writing consumer offsets at close failed");
        }
        self.shared.writer.close().await;
        self.shared.reader.close().await;
        self.shared.lock.lock().expect("bus file lock").take();
    }
}
