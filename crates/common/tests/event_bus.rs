//! The event bus contract. Every implementation runs this suite: the in-process bus, and
//! the Kafka adapter against librdkafka's own in-process Kafka-protocol cluster
//! (`MockCluster`). The platform's end-to-end run on a real broker is in the `tests` crate.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use duovarsity_common::events::kafka::{KafkaBus, KafkaSettings};
use duovarsity_common::events::memory::MemoryBus;
use duovarsity_common::events::{EventBus, Outgoing, Record, Subscription};

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
    // Per-key order, headers kept.
    let mut reader = bus.subscribe(topic, &reader_group).await.unwrap();
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
    let mut audit = bus.subscribe(topic, &audit_group).await.unwrap();
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

#[tokio::test]
async fn the_in_process_bus_keeps_the_contract() {
    let bus = MemoryBus::new(4, 10_000);
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
async fn the_in_process_bus_keeps_memory_bounded() {
    let bus = MemoryBus::new(1, 5);
    let mut late = bus.subscribe("bounded.v1", "late").await.unwrap();
    for n in 0..12 {
        bus.publish(event("bounded.v1", "k", n)).await.unwrap();
    }
    // Only the newest five are kept; a slow consumer skips to the oldest kept record.
    let first = next(&mut late).await;
    assert_eq!(first.offset, 7);
    assert_eq!(first.payload, Bytes::from("k:7"));
}

#[tokio::test]
async fn a_waiting_consumer_wakes_on_publish() {
    let bus = MemoryBus::new(2, 100);
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
