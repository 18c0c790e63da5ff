//! The transactional outbox on SQLite and PostgreSQL: nothing lost while the bus is down,
//! nothing published for a rolled-back change, order kept, and (PostgreSQL) two relays
//! never publish the same row.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::embedded::EmbeddedBus;
use duovarsity_common::events::outbox::Outbox;
use duovarsity_common::events::{BusError, Delivered, EventBus, Outgoing, Subscription};
use duovarsity_testkit::TempPostgres;

/// A bus that can be switched off, like a broker going down.
struct FlakyBus {
    inner: EmbeddedBus,
    down: AtomicBool,
}

#[async_trait]
impl EventBus for FlakyBus {
    async fn publish(&self, record: Outgoing) -> Result<Delivered, BusError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BusError::Unavailable("broker stopped".into()));
        }
        self.inner.publish(record).await
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError> {
        self.inner.subscribe(topic, group).await
    }
}

async fn open(url: &str) -> Database {
    let db = Database::connect(url, None, 8).await.unwrap();
    db.migrate(&Migrations::default().with_outbox("test_outbox", 1))
        .await
        .unwrap();
    db
}

fn event(n: usize) -> Outgoing {
    Outgoing {
        topic: "user.v1".into(),
        key: format!("user-{}", n % 2),
        payload: Bytes::from(format!("event {n}")),
        headers: vec![(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        )],
    }
}

async fn enqueue_committed(db: &Database, outbox: &Outbox, n: usize) {
    let mut tx = db.writer().begin().await.unwrap();
    outbox
        .enqueue(&mut tx, &uuid::Uuid::now_v7().to_string(), &event(n))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn suite(db: Database) {
    let (inner, _bus_dir) = duovarsity_testkit::embedded_bus(2).await;
    let bus = Arc::new(FlakyBus {
        inner,
        down: AtomicBool::new(false),
    });
    let outbox = Outbox::new("test_outbox");
    let relay = outbox.relay(db.clone(), bus.clone());
    let mut consumer = bus.subscribe("user.v1", "test").await.unwrap();

    // A rolled-back change publishes nothing.
    let mut tx = db.writer().begin().await.unwrap();
    outbox
        .enqueue(&mut tx, &uuid::Uuid::now_v7().to_string(), &event(99))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(relay.publish_batch().await.unwrap(), 0);

    // The broker is down: state changes still succeed and the events wait.
    bus.down.store(true, Ordering::SeqCst);
    for n in 0..6 {
        enqueue_committed(&db, &outbox, n).await;
    }
    assert!(relay.publish_batch().await.is_err());
    // It comes back: every event is delivered once, in order per key.
    bus.down.store(false, Ordering::SeqCst);
    assert_eq!(relay.publish_batch().await.unwrap(), 6);
    assert_eq!(
        relay.publish_batch().await.unwrap(),
        0,
        "sent rows are not published again"
    );
    let mut received = Vec::new();
    for _ in 0..6 {
        let record = tokio::time::timeout(Duration::from_secs(2), consumer.next())
            .await
            .unwrap()
            .unwrap();
        received.push((
            record.key.clone(),
            String::from_utf8(record.payload.to_vec()).unwrap(),
        ));
        assert_eq!(record.headers[0].0, "traceparent");
    }
    for key in ["user-0", "user-1"] {
        let order: Vec<&String> = received
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, p)| p)
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
    }
    assert_eq!(received.len(), 6);
}

#[tokio::test]
async fn the_outbox_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    suite(
        open(&format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("outbox.db").display()
        ))
        .await,
    )
    .await;
}

#[tokio::test]
async fn the_outbox_on_postgres() {
    let database = TempPostgres::create().await;
    suite(open(&database.url).await).await;
    database.drop_database().await;
}

#[tokio::test]
async fn two_postgres_relays_never_publish_the_same_row() {
    let database = TempPostgres::create().await;
    let db = open(&database.url).await;
    let outbox = Outbox::new("test_outbox");
    for n in 0..300 {
        enqueue_committed(&db, &outbox, n).await;
    }
    let (bus, _bus_dir) = duovarsity_testkit::embedded_bus(1).await;
    let bus = Arc::new(bus);
    let relays = (0..2).map(|_| {
        let relay = outbox.relay(db.clone(), bus.clone());
        tokio::spawn(async move {
            let mut total = 0;
            loop {
                match relay.publish_batch().await.unwrap() {
                    0 => return total,
                    n => total += n,
                }
            }
        })
    });
    let totals: Vec<usize> = futures::future::join_all(relays)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(totals.iter().sum::<usize>(), 300, "{totals:?}");
    let mut consumer = bus.subscribe("user.v1", "check").await.unwrap();
    let mut payloads = HashSet::new();
    for _ in 0..300 {
        let record = tokio::time::timeout(Duration::from_secs(2), consumer.next())
            .await
            .unwrap()
            .unwrap();
        assert!(payloads.insert(record.payload), "a row was published twice");
    }
    database.drop_database().await;
}
