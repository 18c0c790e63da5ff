//! End-to-end event throughput and latency, through the real pieces: each state change is
//! a database transaction that writes a row and its event into the transactional outbox;
//! the relay publishes to the bus; the idempotent consumer applies each event once in its
//! own transaction. Latency runs from the producer's commit to the consumer's commit.
//!
//! ```text
//! cargo run --release -p duovarsity-common --example events_bench -- \
//!     [--bus embedded|kafka] [--brokers 127.0.0.1:9092] [--db URL] [--events N] [--rate PER_SEC]
//! ```
//! `--rate 0` (the default) produces as fast as the database takes it (throughput);
//! a rate measures latency at that steady load. Defaults: the embedded bus, SQLite in a
//! temporary directory, 20,000 events. `scripts/bench-events.sh` runs the set quoted in
//! docs/performance.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use duovarsity_common::Error;
use duovarsity_common::db::{Backend, Database};
use duovarsity_common::events::consumer::{Consumer, Handler};
use duovarsity_common::events::embedded::{EmbeddedBus, EmbeddedSettings};
use duovarsity_common::events::kafka::{KafkaBus, KafkaSettings};
use duovarsity_common::events::outbox::Outbox;
use duovarsity_common::events::{EventBus, pending_event};
use duovarsity_proto::events::{Envelope, UserRegistered};
use sqlx::{Any, Executor, Transaction};
use tokio_util::sync::CancellationToken;

/// When each event was committed, and how long it took to be applied.
#[derive(Default)]
struct Clock {
    committed: HashMap<String, Instant>,
    latencies: Vec<Duration>,
}

struct Applier(Arc<Mutex<Clock>>);

#[async_trait]
impl Handler for Applier {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), Error> {
        sqlx::query("INSERT INTO bench_effects (event_id) VALUES ($1)")
            .bind(&envelope.event_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn committed(&self, envelope: &Envelope) {
        let mut clock = self.0.lock().unwrap();
        if let Some(at) = clock.committed.remove(&envelope.event_id) {
            clock.latencies.push(at.elapsed());
        }
    }
}

/// Events through outbox, bus and idempotent consumer: throughput and latency.
#[derive(clap::Parser)]
struct Args {
    /// `embedded` (the durable in-process bus, a file in the temporary directory) or `kafka`.
    #[arg(long, default_value = "embedded")]
    bus: String,
    /// Kafka bootstrap servers, with `--bus kafka`.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Database URL; a SQLite file in a temporary directory when absent.
    #[arg(long)]
    db: Option<String>,
    /// How many state changes (one event each).
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// State changes per second; 0 for as fast as the database takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

async fn open(url: &str) -> Database {
    let db = Database::connect(url, None, 8)
        .await
        .expect("the database opens");
    let payload = match db.backend() {
        Backend::Sqlite => "BLOB",
        Backend::Postgres => "BYTEA",
    };
    for statement in [
        "DROP TABLE IF EXISTS bench_outbox".to_string(),
        "DROP TABLE IF EXISTS bench_processed".to_string(),
        "DROP TABLE IF EXISTS bench_effects".to_string(),
        "DROP TABLE IF EXISTS bench_changes".to_string(),
        format!(
            "CREATE TABLE bench_outbox (id TEXT PRIMARY KEY, topic TEXT NOT NULL, event_key TEXT NOT NULL, \
             payload {payload} NOT NULL, headers TEXT NOT NULL, created_at BIGINT NOT NULL, sent_at BIGINT)"
        ),
        "CREATE INDEX bench_outbox_pending ON bench_outbox (id) WHERE sent_at IS NULL".to_string(),
        "CREATE TABLE bench_processed (consumer_group TEXT NOT NULL, event_id TEXT NOT NULL, \
         processed_at BIGINT NOT NULL, PRIMARY KEY (consumer_group, event_id))"
            .to_string(),
        "CREATE TABLE bench_effects (event_id TEXT NOT NULL)".to_string(),
        "CREATE TABLE bench_changes (id TEXT PRIMARY KEY, n BIGINT NOT NULL)".to_string(),
    ] {
        db.writer()
            .execute(statement.as_str())
            .await
            .expect("bench schema");
    }
    db
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = args.db.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        )
    });
    let db = open(&url).await;
    let topic = format!("bench{}", uuid::Uuid::now_v7().simple());
    let bus: Arc<dyn EventBus> = match args.bus.as_str() {
        "embedded" => Arc::new(
            EmbeddedBus::open(&dir.path().join("bus.db"), EmbeddedSettings::default())
                .await
                .expect("the embedded bus"),
        ),
        "kafka" => Arc::new(KafkaBus::connect(KafkaSettings::new(&args.brokers)).expect("Kafka")),
        other => panic!("--bus is embedded or kafka, not {other}"),
    };
    let stop = CancellationToken::new();
    let clock = Arc::new(Mutex::new(Clock::default()));
    let consumer = Consumer::new(
        db.clone(),
        "bench_processed",
        bus.clone(),
        &topic,
        "bench",
        Applier(clock.clone()),
    );
    let consuming = tokio::spawn(consumer.run(stop.clone()));
    // Let the consumer join its group before the clock starts.
    tokio::time::sleep(Duration::from_secs(if args.bus == "kafka" { 5 } else { 0 })).await;
    let outbox = Outbox::new("bench_outbox");
    let relaying = tokio::spawn(outbox.relay(db.clone(), bus.clone()).run(stop.clone()));

    let started = Instant::now();
    let mut pace = (args.rate > 0)
        .then(|| tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64)));
    for n in 0..args.events {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        // A state change and its event, in one transaction; keyed by 64 aggregates.
        let aggregate = format!("user-{}", n % 64);
        let mut event = pending_event(
            &aggregate,
            &UserRegistered {
                user_id: aggregate.clone(),
                email: format!("{aggregate}@example.com"),
                display_name: format!("Learner {n}"),
                time_zone: "UTC".into(),
            },
        );
        // A topic of the bench's own, so runs never mix with the platform's events.
        event.record.topic = topic.clone();
        let mut tx = db.writer().begin().await.expect("a transaction");
        sqlx::query("INSERT INTO bench_changes (id, n) VALUES ($1, $2)")
            .bind(&event.event_id)
            .bind(n as i64)
            .execute(&mut *tx)
            .await
            .expect("the change");
        outbox
            .enqueue_event(&mut tx, &event)
            .await
            .expect("the event");
        tx.commit().await.expect("commit");
        clock
            .lock()
            .unwrap()
            .committed
            .insert(event.event_id.clone(), Instant::now());
        outbox.wake();
    }
    let produced = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let applied = clock.lock().unwrap().latencies.len();
        if applied >= args.events {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {applied} of {} applied after 300 s",
            args.events
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = started.elapsed();
    stop.cancel();
    let _ = relaying.await;
    let _ = consuming.await;

    let mut latencies = std::mem::take(&mut clock.lock().unwrap().latencies);
    latencies.sort_unstable();
    let effects: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bench_effects")
        .fetch_one(db.writer())
        .await
        .expect("count");
    assert_eq!(
        effects as usize, args.events,
        "each event applied exactly once"
    );
    let backend = if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    println!(
        "bus={} db={backend} events={} rate={}: produced in {:.2} s, all applied in {:.2} s = {:.0} events/s end to end",
        args.bus,
        args.events,
        if args.rate == 0 {
            "max".to_string()
        } else {
            format!("{}/s", args.rate)
        },
        produced.as_secs_f64(),
        total.as_secs_f64(),
        args.events as f64 / total.as_secs_f64(),
    );
    println!(
        "  commit -> applied latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (effects: {effects}, exactly once)",
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
    );
}
