//! The event bus contract. Every implementation runs this suite: the embedded bus, and
//! the Kafka adapter against librdkafka's own in-process Kafka-protocol cluster
//! (`MockCluster`). The platform's end-to-end run on a real broker is in the `tests` crate.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use duovarsity_common::events::embedded::{EmbeddedBus, EmbeddedSettings};
use duovarsity_common::events::kafka::{KafkaBus, KafkaSettings};
use duovarsity_common::events::{BusError, EventBus, Outgoing, Record, Subscription};

fn event(topic: &str, key: &str, n: usize) -> Outgoing {
    Outgoing {
        topic: topic.into(),
        key: key.into(),
        payload: Bytes::from(format!("{key}:{n}")),
        headers: vec![("traceparent".into(), format!("00-{n:032x}-{n:016x}-01"))],
    }
}

async fn next(subscription: &mut Box<dyn Subscription>) -> Record {
    tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a record arrives within 10 s")
        .unwrap()
}

/// Everything the subscription delivers until it has been idle for `idle`.
async fn drain(subscription: &mut Box<dyn Subscription>, idle: Duration) -> Vec<Record> {
    let mut records = Vec::new();
    while let Ok(record) = tokio::time::timeout(idle, subscription.next()).await {
        records.push(record.unwrap());
    }
    records
}

async fn contract(bus: &dyn EventBus, topic: &str, idle: Duration) {
    let reader_group = format!("{topic}.reader");
    let audit_group = format!("{topic}.audit");
    // Per-key order, headers kept. Both groups exist before the records: a group that
    // joins later starts at the oldest kept record, and the embedded bus keeps only what
    // some known group has not read yet.
    let mut reader = bus.subscribe(topic, &reader_group).await.unwrap();
    let mut audit = bus.subscribe(topic, &audit_group).await.unwrap();
    for n in 0..20 {
        bus.publish(event(topic, &format!("k{}", n % 3), n))
            .await
            .unwrap();
    }
    let mut seen: Vec<Record> = Vec::new();
    for _ in 0..20 {
        seen.push(next(&mut reader).await);
    }
    for key in ["k0", "k1", "k2"] {
        let numbers: Vec<usize> = seen
            .iter()
            .filter(|r| r.key == key)
            .map(|r| {
                String::from_utf8(r.payload.to_vec())
                    .unwrap()
                    .split(':')
                    .nth(1)
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        assert_eq!(numbers, sorted, "key {key} keeps its order");
    }
    assert!(seen[0].headers[0].1.starts_with("00-"));

    // Commits survive a restart; per partition, everything after the committed offset
    // comes again (at least once), and nothing before it.
    let committed_records = &seen[..10];
    for record in committed_records {
        reader.commit(record).await.unwrap();
    }
    drop(reader);
    let mut committed: HashMap<u32, u64> = HashMap::new();
    for record in committed_records {
        let next_offset = committed.entry(record.partition).or_insert(0);
        *next_offset = (*next_offset).max(record.offset + 1);
    }
    let expected: HashSet<(u32, u64)> = seen
        .iter()
        .filter(|r| r.offset >= committed.get(&r.partition).copied().unwrap_or(0))
        .map(|r| (r.partition, r.offset))
        .collect();
    let mut restarted = bus.subscribe(topic, &reader_group).await.unwrap();
    let again: HashSet<(u32, u64)> = drain(&mut restarted, idle)
        .await
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect();
    assert_eq!(again, expected);
    assert!(again.len() >= 10);
    for record in &seen {
        restarted.commit(record).await.unwrap();
    }
    drop(restarted);
    let mut after_all = bus.subscribe(topic, &reader_group).await.unwrap();
    assert!(
        drain(&mut after_all, idle).await.is_empty(),
        "everything committed: nothing comes again"
    );

    // Another group sees everything, independently.
    assert_eq!(drain(&mut audit, idle).await.len(), 20);

    // Replay from an offset.
    let first = &seen[0];
    audit.seek(first.partition, first.offset).await.unwrap();
    assert_eq!(next(&mut audit).await, *first);
}

/// How a bus treats commits that race a member's leaving.
#[derive(Clone, Copy, PartialEq)]
enum Leaving {
    /// Commits made before a member leaves hold (the in-process bus, a real broker).
    CommitsHold,
    /// librdkafka's mock cluster refuses commits once the leave's rebalance has begun, so
    /// the leaver's last commits may be lost and its records delivered again (which the
    /// idempotent consumer absorbs); only the leaver's records may come again.
    MayRedeliverTheLeavers,
}

async fn members_split_partitions(
    bus: &dyn EventBus,
    topic: &str,
    idle: Duration,
    leaving: Leaving,
) {
    let group = format!("{topic}.workers");
    let mut a = bus.subscribe(topic, &group).await.unwrap();
    let mut b = bus.subscribe(topic, &group).await.unwrap();
    for n in 0..40 {
        bus.publish(event(topic, &format!("key-{n}"), n))
            .await
            .unwrap();
    }
    let got_a = drain(&mut a, idle).await;
    let got_b = drain(&mut b, idle).await;
    assert_eq!(
        got_a.len() + got_b.len(),
        40,
        "every record once across the group"
    );
    let parts_a: HashSet<u32> = got_a.iter().map(|r| r.partition).collect();
    let parts_b: HashSet<u32> = got_b.iter().map(|r| r.partition).collect();
    assert!(
        parts_a.is_disjoint(&parts_b),
        "a partition belongs to one member"
    );
    assert!(!got_a.is_empty() && !got_b.is_empty());

    // When a member leaves, the other takes over its partitions from the committed offsets.
    for record in &got_b {
        b.commit(record).await.unwrap();
    }
    for record in &got_a {
        a.commit(record).await.unwrap();
    }
    drop(a);
    bus.publish(event(topic, "late", 99)).await.unwrap();
    // Everything up to the new record, read until it arrives (no guessed idle pause).
    let mut before_late = Vec::new();
    loop {
        let record = next(&mut b).await;
        if record.key == "late" {
            break;
        }
        before_late.push(record);
    }
    match leaving {
        Leaving::CommitsHold => assert!(
            before_late.is_empty(),
            "committed records are not delivered again: {before_late:?}"
        ),
        Leaving::MayRedeliverTheLeavers => assert!(
            before_late.iter().all(|r| got_a.contains(r)),
            "only the leaver's records may come again: {before_late:?}"
        ),
    }
}

async fn embedded(dir: &tempfile::TempDir, max_bytes: u64) -> EmbeddedBus {
    let settings = EmbeddedSettings {
        partitions: 4,
        max_bytes,
    };
    EmbeddedBus::open(&dir.path().join("bus.db"), settings)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_embedded_bus_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(&dir, 1 << 20).await;
    contract(&bus, "orders.v1", Duration::from_millis(100)).await;
    members_split_partitions(
        &bus,
        "split.v1",
        Duration::from_millis(100),
        Leaving::CommitsHold,
    )
    .await;
}

// Fetches wait up to 50 ms for data, so a quiet second means drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_bus_keeps_the_contract() {
    let (_cluster, bus) = duovarsity_testkit::mock_kafka(&["orders.v1"], 4);
    contract(&bus, "orders.v1", Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_group_members_split_partitions() {
    let (_cluster, bus) = duovarsity_testkit::mock_kafka(&["split.v1"], 4);
    members_split_partitions(
        &bus,
        "split.v1",
        Duration::from_secs(1),
        Leaving::MayRedeliverTheLeavers,
    )
    .await;
}

#[tokio::test]
async fn the_embedded_bus_keeps_acknowledged_records_and_commits_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(&dir, 1 << 20).await;
    let mut reader = bus.subscribe("kept.v1", "reader").await.unwrap();
    for n in 0..30 {
        bus.publish(event("kept.v1", &format!("k{}", n % 5), n))
            .await
            .unwrap();
    }
    let first: Vec<Record> = drain(&mut reader, Duration::from_millis(100)).await;
    assert_eq!(first.len(), 30);
    for record in &first[..10] {
        reader.commit(record).await.unwrap();
    }
    drop(reader);
    // A crash: the process's memory is gone (no close, no flush of the last commits).
    drop(bus);
    let bus = embedded(&dir, 1 << 20).await;
    let mut after_crash = bus.subscribe("kept.v1", "reader").await.unwrap();
    let again = drain(&mut after_crash, Duration::from_millis(100)).await;
    assert!(
        (20..=30).contains(&again.len()),
        "every record not known to be committed comes again, nothing is lost: {}",
        again.len()
    );
    let mut payloads: Vec<Bytes> = again.iter().map(|r| r.payload.clone()).collect();
    payloads.extend(first[..10].iter().map(|r| r.payload.clone()));
    let distinct: HashSet<Bytes> = payloads.into_iter().collect();
    assert_eq!(distinct.len(), 30);

    // A clean stop writes every commit: after it, nothing comes again but the new record.
    for record in &again {
        after_crash.commit(record).await.unwrap();
    }
    drop(after_crash);
    bus.publish(event("kept.v1", "k0", 30)).await.unwrap();
    bus.close().await;
    let bus = embedded(&dir, 1 << 20).await;
    let mut after_stop = bus.subscribe("kept.v1", "reader").await.unwrap();
    let backlog = drain(&mut after_stop, Duration::from_millis(100)).await;
    assert_eq!(
        backlog
            .iter()
            .map(|r| r.payload.clone())
            .collect::<Vec<_>>(),
        vec![Bytes::from("k0:30")]
    );
    let last = &backlog[0];
    assert_eq!(
        last.offset,
        first
            .iter()
            .filter(|r| r.partition == last.partition)
            .count() as u64
    );
}

#[tokio::test]
async fn one_embedded_bus_file_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(&dir, 1 << 20).await;
    let settings = EmbeddedSettings {
        partitions: 4,
        max_bytes: 1 << 20,
    };
    let second = EmbeddedBus::open(&dir.path().join("bus.db"), settings).await;
    let Err(BusError::Unavailable(message)) = second else {
        panic!("a second bus opened the same file");
    };
    assert!(message.contains("in use"), "{message}");
    drop(bus);
    EmbeddedBus::open(&dir.path().join("bus.db"), settings)
        .await
        .expect("free again once the first is gone");
}

#[tokio::test]
async fn a_full_embedded_bus_refuses_new_records_instead_of_dropping_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    // Each record is 4 bytes of key, 3 KiB of payload and ~80 bytes of headers.
    let max_bytes = 64 * 1024;
    let bus = embedded(&dir, max_bytes).await;
    let mut slow = bus.subscribe("full.v1", "slow").await.unwrap();
    let record = |n: usize| Outgoing {
        payload: Bytes::from(format!("{n:>3072}")),
        ..event("full.v1", &format!("k{}", n % 7), n)
    };
    let batch: Vec<Outgoing> = (0..40).map(record).collect();
    let (accepted, error) = bus.publish_all(&batch).await;
    assert!(
        (15..40).contains(&accepted),
        "as many as fit are stored: {accepted}"
    );
    assert!(
        matches!(error, Some(BusError::Full { limit, .. }) if limit == max_bytes),
        "{error:?}"
    );
    assert!(matches!(
        bus.publish(record(99)).await,
        Err(BusError::Full { .. })
    ));
    assert!(bus.retained_bytes() <= max_bytes);

    // Every stored record is still there for the slow group, in full.
    let stored = drain(&mut slow, Duration::from_millis(100)).await;
    assert_eq!(stored.len(), accepted);
    let mut numbers: Vec<usize> = stored
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).trim().parse().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..accepted).collect::<Vec<_>>());

    // Once the group commits, the space comes back and the rest is accepted.
    for record in &stored {
        slow.commit(record).await.unwrap();
    }
    bus.flush().await.unwrap();
    assert_eq!(bus.retained_bytes(), 0);
    let (rest, error) = bus.publish_all(&batch[accepted..]).await;
    assert_eq!((rest, error.is_none()), (40 - accepted, true));
}

/// Resident memory of this process, from /proc (Linux).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_gets_every_one_of_100_000_events_once_in_bounded_memory() {
    const EVENTS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(&dir, 1 << 30).await;
    // The group is known, then held back while everything is published.
    let mut slow = bus.subscribe("burst.v1", "slow").await.unwrap();
    let before = resident_bytes();
    for start in (0..EVENTS).step_by(1000) {
        let batch: Vec<Outgoing> = (start..start + 1000)
            .map(|n| Outgoing {
                payload: Bytes::from(format!("{n:>1024}")),
                ..event("burst.v1", &format!("learner-{}", n % 97), n)
            })
            .collect();
        assert_eq!(bus.publish_all(&batch).await.0, 1000);
    }
    let published = resident_bytes().saturating_sub(before);
    // ~100 MiB of records went through; the bus keeps them in its file, not in memory.
    assert!(
        published < 48 << 20,
        "memory grew by {} MiB while 100 MiB were published",
        published >> 20
    );

    let mut seen = vec![false; EVENTS];
    for _ in 0..EVENTS {
        let record = next(&mut slow).await;
        let n: usize = String::from_utf8_lossy(&record.payload)
            .trim()
            .parse()
            .unwrap();
        assert!(!seen[n], "event {n} delivered twice");
        seen[n] = true;
        slow.commit(&record).await.unwrap();
    }
    assert!(seen.iter().all(|s| *s));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), slow.next())
            .await
            .is_err(),
        "nothing after the last event"
    );
    bus.flush().await.unwrap();
    assert_eq!(bus.retained_bytes(), 0, "read by every group: deleted");
}

#[tokio::test]
async fn a_waiting_consumer_wakes_on_publish() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(&dir, 1 << 20).await;
    let mut consumer = bus.subscribe("wake.v1", "g").await.unwrap();
    let publisher = bus.clone();
    let waiter = tokio::spawn(async move { next(&mut consumer).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    publisher.publish(event("wake.v1", "k", 1)).await.unwrap();
    assert_eq!(waiter.await.unwrap().payload, Bytes::from("k:1"));
}

/// A Kafka bus on the broker the test setup started (`scripts/test-services.sh` runs tansu),
/// with topic names of this run so that runs do not see each other's records.
fn broker_bus() -> (KafkaBus, String) {
    let settings = KafkaSettings::new(duovarsity_testkit::kafka_brokers());
    let bus = KafkaBus::connect(settings).unwrap();
    (bus, uuid::Uuid::now_v7().simple().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_broker_keeps_the_contract() {
    let (bus, run) = broker_bus();
    contract(&bus, &format!("orders.{run}"), Duration::from_secs(2)).await;
    members_split_partitions(
        &bus,
        &format!("split.{run}"),
        Duration::from_secs(2),
        Leaving::CommitsHold,
    )
    .await;
}
