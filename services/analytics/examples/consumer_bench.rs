//! How fast the analytics consumer applies progress events on PostgreSQL, beside the bare
//! consumer throughput of the same bus in the same run:
//!
//! 1. `EVENTS` progress events (four `progress.lesson_progressed` reports per lesson, then
//!    its `progress.lesson_completed`, spread over `LEARNERS` learners in three time
//!    zones and 40 lessons of 4 courses) are published to an embedded bus first;
//! 2. **bare**: a consumer group that only reads and commits each record;
//! 3. **batched**: the analytics consumer (batches of up to 500 in one transaction);
//! 4. **one by one**: the same handler, one event per transaction (a fifth of the events),
//!    for the cost batching saves.
//!
//! ```text
//! DUOVARSITY_TEST_POSTGRES_URL=postgres://... cargo run --release -p duovarsity-analytics \
//!     --example consumer_bench -- [EVENTS] [LEARNERS]
//! ```
//! Each run uses a fresh database (`dv_bench_<uuid>`, dropped at the end). Results are
//! events per second; `scripts/bench-analytics.sh` runs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duovarsity_analytics::AnalyticsModule;
use duovarsity_common::events::embedded::{EmbeddedBus, EmbeddedSettings};
use duovarsity_common::events::{EventBus, pending_event, topics};
use duovarsity_module::{ServiceContext, ServiceModule};
use duovarsity_proto::events::{LessonCompleted, LessonProgressed, UserRegistered};
use sqlx::{Connection, Executor, Row};
use tokio_util::sync::CancellationToken;

const ZONES: [&str; 3] = ["Europe/Lisbon", "America/New_York", "Asia/Kolkata"];

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Publishes `count` progress events (and each learner's registration) to a new bus.
async fn fill(dir: &std::path::Path, count: usize, learners: usize) -> Arc<dyn EventBus> {
    std::fs::create_dir_all(dir).unwrap();
    let settings = EmbeddedSettings {
        partitions: 8,
        ..EmbeddedSettings::default()
    };
    let bus = EmbeddedBus::open(&dir.join("bus.db"), settings)
        .await
        .unwrap();
    let ids: Vec<String> = (0..learners)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let courses: Vec<String> = (0..4).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let lessons: Vec<String> = (0..40).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let mut batch = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let registered = UserRegistered {
            user_id: id.clone(),
            email: String::new(),
            display_name: format!("Learner {n}"),
            time_zone: ZONES[n % ZONES.len()].into(),
        };
        batch.push(pending_event(id, &registered).record);
    }
    // Learner by learner, lesson by lesson: reports at 25 % steps, then the completion.
    let mut made = 0;
    let mut step = 0_usize;
    while made < count {
        let learner = step % learners;
        let lesson = (step / learners) % lessons.len();
        let course = &courses[lesson / 10];
        for percent in [25, 50, 75, 100] {
            let report = LessonProgressed {
                learner_id: ids[learner].clone(),
                course_id: course.clone(),
                lesson_id: lessons[lesson].clone(),
                percent,
                position_seconds: percent * 6,
                completed: percent == 100,
                lesson_title: format!("Lesson {lesson}"),
            };
            batch.push(pending_event(&ids[learner], &report).record);
        }
        let done = LessonCompleted {
            learner_id: ids[learner].clone(),
            course_id: course.clone(),
            lesson_id: lessons[lesson].clone(),
            lesson_title: format!("Lesson {lesson}"),
        };
        batch.push(pending_event(&ids[learner], &done).record);
        made += 5;
        step += 1;
        if batch.len() >= 2000 {
            let (sent, error) = bus.publish_all(&batch).await;
            assert!(error.is_none() && sent == batch.len(), "{error:?}");
            batch.clear();
        }
    }
    let (sent, error) = bus.publish_all(&batch).await;
    assert!(error.is_none() && sent == batch.len(), "{error:?}");
    Arc::new(bus)
}

/// Reads and commits every record of the progress topic as group `bare`.
async fn bare(bus: &Arc<dyn EventBus>, count: usize) -> f64 {
    let mut subscription = bus.subscribe(topics::PROGRESS, "bare").await.unwrap();
    let started = Instant::now();
    for _ in 0..count {
        let record = subscription.next().await.unwrap();
        subscription.commit(&record).await.unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// Events the analytics consumers have applied (every topic).
async fn applied(db: &mut sqlx::PgConnection) -> usize {
    sqlx::query("SELECT COUNT(*) AS n FROM analytics_processed_events")
        .fetch_one(db)
        .await
        .unwrap()
        .get::<i64, _>("n") as usize
}

/// Runs the analytics consumer of the progress topic until `count` events are recorded.
async fn analytics(
    module: &AnalyticsModule,
    bus: &Arc<dyn EventBus>,
    url: &str,
    count: usize,
    one_by_one: bool,
) -> f64 {
    let mut consumer = module.consumer(bus.clone(), topics::PROGRESS);
    if one_by_one {
        consumer = consumer.with_batch(1, Duration::ZERO);
    }
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    let before = applied(&mut db).await;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(consumer.run(stop.clone()));
    while applied(&mut db).await < before + count {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    running.await.unwrap().unwrap();
    rate
}

#[tokio::main]
async fn main() {
    let events = arg(1, 50_000);
    let learners = arg(2, 2_000);
    let server = std::env::var("DUOVARSITY_TEST_POSTGRES_URL")
        .expect("DUOVARSITY_TEST_POSTGRES_URL names a PostgreSQL server");
    let name = format!("dv_bench_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let url = format!("{}/{name}", server.rsplit_once('/').unwrap().0);

    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let bus = fill(&dir.path().join("a"), events, learners).await;
    let single_bus = fill(&dir.path().join("b"), events / 5, learners / 5).await;
    println!(
        "published {} progress events of {} learners in {:.1} s",
        events + events / 5,
        learners + learners / 5,
        started.elapsed().as_secs_f64()
    );
    let bare_rate = bare(&bus, events).await;
    println!("bare consumer of the bus (read + commit): {bare_rate:.0} events/s");

    let env = std::collections::BTreeMap::from([
        ("DUOVARSITY_DATABASE_URL".to_string(), url.clone()),
        (
            "DUOVARSITY_DATA_DIR".to_string(),
            dir.path().display().to_string(),
        ),
    ]);
    let config = duovarsity_config::Config::from_sources(None, &env).unwrap();
    let module = AnalyticsModule::open(&ServiceContext::new(config))
        .await
        .unwrap();
    // The registrations first (user topic), so learners have their time zones.
    let stop = CancellationToken::new();
    let mut registering = Vec::new();
    for bus in [&bus, &single_bus] {
        registering.push(tokio::spawn(
            module.consumer(bus.clone(), topics::USER).run(stop.clone()),
        ));
    }
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    while applied(&mut db).await < learners + learners / 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let batched = analytics(&module, &bus, &url, events, false).await;
    println!(
        "analytics consumer on PostgreSQL, batches of up to {}: {batched:.0} events/s ({:.2} of bare)",
        duovarsity_analytics::BATCH,
        batched / bare_rate
    );
    let single = analytics(&module, &single_bus, &url, events / 5, true).await;
    println!(
        "analytics consumer on PostgreSQL, one event per transaction: {single:.0} events/s ({:.2} of bare; batching x{:.1})",
        single / bare_rate,
        batched / single
    );
    stop.cancel();
    for task in registering {
        task.await.unwrap().unwrap();
    }
    single_bus.close().await;
    ServiceModule::close(&module).await;
    bus.close().await;
    admin
        .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await
        .unwrap();
}
