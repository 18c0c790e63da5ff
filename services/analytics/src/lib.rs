//! The analytics service (`duovarsity.analytics.v1`): XP, streaks and weekly leaderboards
//! for learners, dashboards for instructors and admins, fed only by platform events (it
//! never reads another service's tables).
//!
//! - Events arrive through the batching idempotent consumer, one transaction per batch
//!   (`ingest`): states read once per batch, per-day aggregates added up in memory, so
//!   reads are index lookups of days.
//! - XP rules are one table ([`xp::RULES`]); streaks are computed from the day history on
//!   read ([`streak`]), in the learner's time zone.
//! - Leaderboards are Redis sorted sets with the database as the truth
//!   ([`leaderboards`]); without Redis, or while it is down, reads go to the database.
//!
//! Rooms: [`grpc`] holds thin handlers; the domain is `activity` (a learner's own),
//! `boards` (leaderboard access), `dashboards` (instructor and admin), `ingest` (events);
//! `convert` makes protobuf of places; [`store`] runs SQL and nothing else.
#![forbid(unsafe_code)]

mod activity;
mod boards;
mod convert;
pub mod dashboards;
mod facts;
pub mod grpc;
pub mod ingest;
pub mod leaderboards;
mod names;
pub mod store;
pub mod streak;
pub mod xp;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::consumer::batch::BatchConsumer;
use duovarsity_common::events::{EventBus, topics};
use duovarsity_common::grpc::GrpcServer;
use duovarsity_common::pubsub::{REDIS_DEADLINE, RedisLink};
use duovarsity_config::Config;
use duovarsity_module::{BackgroundTask, OpenError, ServiceContext, ServiceModule};
use duovarsity_proto::analytics::analytics_service_server::AnalyticsServiceServer;
use tokio_util::sync::CancellationToken;

use crate::grpc::AnalyticsGrpc;
use crate::ingest::Ingest;
use crate::leaderboards::Leaderboards;
use crate::names::Names;

pub const SERVICE: &str = "analytics";
/// The consumer group of the analytics service on every topic it reads.
pub const GROUP: &str = "analytics";
/// The topics it consumes.
pub const TOPICS: [&str; 6] = [
    topics::USER,
    topics::COURSE,
    topics::ENROLLMENT,
    topics::PROGRESS,
    topics::PAYMENT,
    topics::AI,
];
/// Events per transaction, and how long a batch waits for more after its first.
pub const BATCH: usize = 500;
pub const LINGER: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("analytics database: {0}")]
    Database(#[from] duovarsity_common::db::OpenError),
    #[error("DUOVARSITY_REDIS_URL (leaderboards): {0}")]
    Redis(#[from] redis::RedisError),
}

/// The analytics domain.
#[derive(Clone)]
pub struct Analytics {
    db: Database,
    leaderboards: Leaderboards,
    names: Names,
}

impl Analytics {
    pub fn leaderboards(&self) -> &Leaderboards {
        &self.leaderboards
    }
}

pub struct AnalyticsModule {
    db: Database,
    analytics: Analytics,
}

impl AnalyticsModule {
    async fn start(config: &Config) -> Result<Self, StartError> {
        let db = Database::open(&config.database(SERVICE), store::migrations()).await?;
        let redis = match &config.redis_url {
            Some(url) => Some(
                RedisLink::connect(
                    redis::Client::open(url.expose().as_str())?,
                    REDIS_DEADLINE,
                    Duration::from_secs(5),
                    "leaderboards are read from the database",
                )
                .await?,
            ),
            None => None,
        };
        Ok(Self {
            analytics: Analytics {
                leaderboards: Leaderboards::new(db.clone(), redis),
                names: Names::new(db.clone()),
                db: db.clone(),
            },
            db,
        })
    }

    pub fn analytics(&self) -> &Analytics {
        &self.analytics
    }

    /// The consumer of one topic (tests and benchmarks run it alone).
    pub fn consumer(&self, bus: Arc<dyn EventBus>, topic: &str) -> BatchConsumer<Ingest> {
        BatchConsumer::new(
            self.db.clone(),
            store::PROCESSED_TABLE,
            bus,
            topic,
            GROUP,
            Ingest {
                leaderboards: self.analytics.leaderboards.clone(),
            },
        )
        .with_batch(BATCH, LINGER)
    }
}

#[async_trait]
impl ServiceModule for AnalyticsModule {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICES: &'static [&'static str] =
        &[duovarsity_proto::analytics::analytics_service_server::SERVICE_NAME];

    fn migrations() -> Migrations {
        store::migrations()
    }

    async fn open(context: &ServiceContext) -> Result<Self, OpenError> {
        Ok(Self::start(&context.config).await?)
    }

    fn database(&self) -> &Database {
        &self.db
    }

    fn register(&self, server: GrpcServer) -> GrpcServer {
        server.add_service(AnalyticsServiceServer::new(AnalyticsGrpc(
            self.analytics.clone(),
        )))
    }

    /// Consumes every topic, and keeps the leaderboards' sets in step, until `shutdown`.
    fn background(
        &self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Vec<BackgroundTask> {
        let mut tasks: Vec<BackgroundTask> = TOPICS
            .iter()
            .map(|topic| -> BackgroundTask {
                Box::pin(
                    self.consumer(bus.clone(), topic)
                        .run_until(shutdown.clone()),
                )
            })
            .collect();
        let leaderboards = self.analytics.leaderboards.clone();
        tasks.push(Box::pin(leaderboards.maintain(shutdown)));
        tasks
    }
}
