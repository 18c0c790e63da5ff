//! The idempotent consumer on SQLite and PostgreSQL: a redelivered event changes nothing,
//! a poison record and an always-failing event go to the dead-letter topic, and the
//! consumer keeps going.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use duovarsity_common::Error;
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::consumer::batch::{BatchConsumer, BatchHandler};
use duovarsity_common::events::consumer::{Consumer, Handler, Outcome};
use duovarsity_common::events::{EventBus, Outgoing, Subscription};
use duovarsity_proto::events::Envelope;
use duovarsity_testkit::TempPostgres;
use prost::Message;
use sqlx::{Any, Executor, Row, Transaction};

/// Counts events into a table, and refuses those whose type is "poisonous".
struct CountingHandler;

#[async_trait]
impl Handler for CountingHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), Error> {
        if envelope.r#type == "poisonous" {
            return Err(Error::FailedPrecondition {
                reason: "TEST",
                message: "this event always fails".into(),
            });
        }
        sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
            .bind(&envelope.event_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

async fn open(url: &str) -> Database {
    let db = Database::connect(url, None, 4).await.unwrap();
    db.migrate(&Migrations::default().with_applied_events("test_processed_events", 1))
        .await
        .unwrap();
    db.writer()
        .execute("CREATE TABLE effects (event_id TEXT NOT NULL)")
        .await
        .unwrap();
    db
}

/// A fresh SQLite database in `dir` with the consumer's tables.
async fn sqlite(dir: &tempfile::TempDir) -> Database {
    open(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("consumer.db").display()
    ))
    .await
}

fn envelope(event_id: &str, kind: &str) -> Outgoing {
    let envelope = Envelope {
        event_id: event_id.into(),
        r#type: kind.into(),
        aggregate_id: "u1".into(),
        ..Default::default()
    };
    Outgoing {
        topic: "user.v1".into(),
        key: "u1".into(),
        payload: Bytes::from(envelope.encode_to_vec()),
        headers: vec![],
    }
}

async fn effects(db: &Database) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM effects")
        .fetch_one(db.writer())
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

async fn suite(db: Database, bus: Arc<dyn EventBus>) {
    let consumer = Consumer::new(
        db.clone(),
        "test_processed_events",
        bus.clone(),
        "user.v1",
        "notifications",
        CountingHandler,
    )
    .with_retries(3, Duration::from_millis(5));
    let mut subscription: Box<dyn Subscription> =
        bus.subscribe("user.v1", "notifications").await.unwrap();
    let mut dlq = bus.subscribe("user.v1.dlq", "inspect").await.unwrap();

    // The same event twice (a relay that crashed between publish and mark-sent).
    bus.publish(envelope("e1", "user.registered"))
        .await
        .unwrap();
    bus.publish(envelope("e1", "user.registered"))
        .await
        .unwrap();
    // Garbage, an event that always fails, then a good one.
    bus.publish(Outgoing {
        topic: "user.v1".into(),
        key: "u1".into(),
        payload: Bytes::from_static(b"\xff\xff not protobuf"),
        headers: vec![],
    })
    .await
    .unwrap();
    bus.publish(envelope("e2", "poisonous")).await.unwrap();
    bus.publish(envelope("e3", "user.registered"))
        .await
        .unwrap();

    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let record = tokio::time::timeout(Duration::from_secs(2), subscription.next())
            .await
            .unwrap()
            .unwrap();
        outcomes.push(consumer.process(&mut subscription, &record).await);
    }
    assert_eq!(outcomes[0], Outcome::Applied);
    assert_eq!(outcomes[1], Outcome::Duplicate);
    assert!(
        matches!(&outcomes[2], Outcome::DeadLettered(reason) if reason.contains("not an event envelope"))
    );
    assert!(
        matches!(&outcomes[3], Outcome::DeadLettered(reason) if reason.contains("always fails"))
    );
    assert_eq!(outcomes[4], Outcome::Applied);
    assert_eq!(
        effects(&db).await,
        2,
        "e1 once, e3 once, nothing for the failures"
    );

    // The dead letters carry the error and the attempts.
    let first = dlq.next().await.unwrap();
    assert!(
        first
            .headers
            .iter()
            .any(|(k, v)| k == "dlq.attempts" && v == "0")
    );
    let second = dlq.next().await.unwrap();
    assert!(
        second
            .headers
            .iter()
            .any(|(k, v)| k == "dlq.attempts" && v == "3")
    );
    assert!(
        second
            .headers
            .iter()
            .any(|(k, v)| k == "dlq.error" && v.contains("always fails"))
    );

    // A restarted consumer (nothing committed in the bus for a new group member) that
    // sees e1 again still changes nothing.
    let mut again = bus
        .subscribe("user.v1", "notifications-replay")
        .await
        .unwrap();
    let replay = Consumer::new(
        db.clone(),
        "test_processed_events",
        bus.clone(),
        "user.v1",
        "notifications",
        CountingHandler,
    );
    let record = again.next().await.unwrap();
    assert_eq!(
        replay.process(&mut again, &record).await,
        Outcome::Duplicate
    );
    assert_eq!(effects(&db).await, 2);
}

#[tokio::test]
async fn the_consumer_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, _bus_dir) = duovarsity_testkit::embedded_bus(1).await;
    suite(sqlite(&dir).await, Arc::new(bus)).await;
}

#[tokio::test]
async fn the_consumer_on_postgres() {
    let database = TempPostgres::create().await;
    let (bus, _bus_dir) = duovarsity_testkit::embedded_bus(1).await;
    suite(open(&database.url).await, Arc::new(bus)).await;
    database.drop_database().await;
}

/// The same on Kafka (librdkafka's mock cluster): the dead-letter topic is a Kafka topic,
/// and a redelivery found by a new group member changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_on_kafka() {
    let (_cluster, bus) = duovarsity_testkit::mock_kafka(&["user.v1", "user.v1.dlq"], 1);
    let dir = tempfile::tempdir().unwrap();
    suite(sqlite(&dir).await, Arc::new(bus)).await;
}

/// Records the trace context the handler runs in.
struct TraceCapture(Arc<std::sync::Mutex<Option<String>>>);

#[async_trait]
impl Handler for TraceCapture {
    async fn handle(&self, _: &mut Transaction<'_, Any>, _: &Envelope) -> Result<(), Error> {
        let mut headers = http::HeaderMap::new();
        duovarsity_common::telemetry::inject_trace(&tracing::Span::current(), &mut headers);
        *self.0.lock().unwrap() = headers
            .get("traceparent")
            .map(|v| v.to_str().unwrap().to_string());
        Ok(())
    }
}

/// The trace id of a `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap()
}

#[tokio::test]
async fn the_handler_runs_in_the_producers_trace() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir).await;
    let (bus, _bus_dir) = duovarsity_testkit::embedded_bus(1).await;
    let bus = Arc::new(bus);
    let seen = Arc::new(std::sync::Mutex::new(None));
    let consumer = Consumer::new(
        db,
        "test_processed_events",
        bus.clone(),
        "traced.v1",
        "tracer",
        TraceCapture(seen.clone()),
    );
    let mut subscription = bus.subscribe("traced.v1", "tracer").await.unwrap();

    let mut event = tracing::info_span!("register").in_scope(|| {
        duovarsity_common::events::pending_event(
            "u1",
            &duovarsity_proto::events::UserRegistered::default(),
        )
    });
    event.record.topic = "traced.v1".into();
    let produced = event
        .record
        .headers
        .iter()
        .find(|(name, _)| name == "traceparent")
        .map(|(_, value)| value.clone())
        .expect("the producer's trace travels in a header");
    bus.publish(event.record).await.unwrap();
    let record = subscription.next().await.unwrap();
    assert_eq!(
        consumer.process(&mut subscription, &record).await,
        Outcome::Applied
    );
    let consumed = seen.lock().unwrap().clone().expect("the handler ran");
    assert_eq!(trace_id(&consumed), trace_id(&produced), "one trace");
    assert_ne!(consumed, produced, "the consumer's own span within it");
}

/// The batching handler: counts what a batch applies, and fails a whole batch that holds
/// a poisonous event (as a constraint or a bug would).
struct CountingBatches(std::sync::Mutex<Vec<usize>>);

#[async_trait]
impl BatchHandler for CountingBatches {
    type Applied = usize;

    async fn handle_batch(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelopes: &[Envelope],
    ) -> Result<usize, Error> {
        for envelope in envelopes {
            CountingHandler.handle(tx, envelope).await?;
        }
        Ok(envelopes.len())
    }

    async fn committed(&self, applied: usize) {
        self.0.lock().unwrap().push(applied);
    }
}

/// A batch with a repeat inside it, an event applied before, garbage and a poison event:
/// the garbage and the poison are dead-lettered, every other event is applied once, and
/// the offsets move past all of them.
async fn batch_suite(db: Database, bus: Arc<dyn EventBus>) {
    let single = Consumer::new(
        db.clone(),
        "test_processed_events",
        bus.clone(),
        "user.v1",
        "batches",
        CountingHandler,
    );
    let batches = BatchConsumer::new(
        db.clone(),
        "test_processed_events",
        bus.clone(),
        "user.v1",
        "batches",
        CountingBatches(Default::default()),
    )
    .with_retries(2, Duration::from_millis(5));
    let mut subscription = bus.subscribe("user.v1", "batches").await.unwrap();
    // b0 is applied before, one at a time.
    bus.publish(envelope("b0", "user.registered"))
        .await
        .unwrap();
    let first = subscription.next().await.unwrap();
    assert_eq!(
        single.process(&mut subscription, &first).await,
        Outcome::Applied
    );

    // One batch: clean, apart from the repeat of b1 and the replay of b0.
    for id in ["b1", "b2", "b1", "b0", "b3"] {
        bus.publish(envelope(id, "user.registered")).await.unwrap();
    }
    let mut records = Vec::new();
    for _ in 0..5 {
        records.push(subscription.next().await.unwrap());
    }
    let outcomes = batches.process(&mut subscription, &records).await;
    assert_eq!(
        outcomes,
        [
            Outcome::Applied,
            Outcome::Applied,
            Outcome::Duplicate,
            Outcome::Duplicate,
            Outcome::Applied
        ]
    );
    assert_eq!(effects(&db).await, 4);

    // A batch with garbage and a poison event: the batch fails and is applied one at a
    // time, so only those two are lost to the dead-letter topic.
    bus.publish(envelope("b4", "user.registered"))
        .await
        .unwrap();
    bus.publish(Outgoing {
        topic: "user.v1".into(),
        key: "u1".into(),
        payload: Bytes::from_static(b"\xff\xff not protobuf"),
        headers: vec![],
    })
    .await
    .unwrap();
    bus.publish(envelope("b5", "poisonous")).await.unwrap();
    bus.publish(envelope("b6", "user.registered"))
        .await
        .unwrap();
    let mut records = Vec::new();
    for _ in 0..4 {
        records.push(subscription.next().await.unwrap());
    }
    let outcomes = batches.process(&mut subscription, &records).await;
    assert_eq!(outcomes[0], Outcome::Applied);
    assert!(
        matches!(&outcomes[1], Outcome::DeadLettered(r) if r.contains("not an event envelope"))
    );
    assert!(matches!(&outcomes[2], Outcome::DeadLettered(r) if r.contains("always fails")));
    assert_eq!(outcomes[3], Outcome::Applied);
    assert_eq!(effects(&db).await, 6, "b0 to b4 and b6, once each");

    // Committed: a new member of the group starts after all of them.
    drop(subscription);
    let mut resumed = bus.subscribe("user.v1", "batches").await.unwrap();
    bus.publish(envelope("b7", "user.registered"))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), resumed.next())
        .await
        .unwrap()
        .unwrap();
    let decoded = Envelope::decode(next.payload.clone()).unwrap();
    assert_eq!(decoded.event_id, "b7");
}

#[tokio::test]
async fn the_batching_consumer_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, _bus_dir) = duovarsity_testkit::embedded_bus(1).await;
    batch_suite(sqlite(&dir).await, Arc::new(bus)).await;
}

#[tokio::test]
async fn the_batching_consumer_on_postgres() {
    let database = TempPostgres::create().await;
    let (bus, _bus_dir) = duovarsity_testkit::embedded_bus(1).await;
    batch_suite(open(&database.url).await, Arc::new(bus)).await;
    database.drop_database().await;
}
