//! The discovery service (`duovarsity.discovery.v1`): search over the published catalog as
//! learners type, fed only by events (it never reads another service's tables).
//!
//! - Catalog and enrollment events become rows of the discovery database ([`ingest`],
//!   consumer group `discovery`, one replica applies each event).
//! - Every replica keeps its own in-memory [`index`] (tantivy), built from those rows at
//!   start and following them by their `changed_at` ([`follow`]): replicas answer alike
//!   without a shared index server, and a new replica catches up by itself.
//! - [`query`] turns what was typed into BM25 with typo and prefix matching; [`search`]
//!   pages, counts facets and highlights; the text of a paid lesson reaches only the
//!   callers who may read it.
//!
//! - [`recommend`] answers "what next" from the learner's rows, the item-to-item model kept
//!   by enrollment events and course outlines; [`model`] ranks (and `discovery evaluate`
//!   measures the same ranking).
//!
//! Rooms: [`grpc`] holds thin handlers; [`store`] runs SQL and nothing else;
//! [`reindex`] replaces the catalog rows with what the owning services list.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod evaluate;
pub mod follow;
pub mod grpc;
mod highlight;
pub mod index;
pub mod ingest;
pub mod model;
pub mod query;
mod recommend;
pub mod reindex;
mod search;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use duovarsity_common::cache::Cache;
use duovarsity_common::clients::CourseClient;
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::consumer::batch::BatchConsumer;
use duovarsity_common::events::{EventBus, topics};
use duovarsity_common::grpc::GrpcServer;
use duovarsity_common::health::Probe;
use duovarsity_module::{BackgroundTask, OpenError, ServiceContext, ServiceModule};
use duovarsity_proto::course::CourseOutline;
use duovarsity_proto::discovery::discovery_service_server::DiscoveryServiceServer;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::follow::{Courses, Follower};
use crate::grpc::DiscoveryGrpc;
use crate::index::SearchIndex;
use crate::ingest::Ingest;

pub const SERVICE: &str = "discovery";
/// The consumer group of the discovery service on every topic it reads.
pub const GROUP: &str = "discovery";
/// Course outlines kept for "continue", and for how long (a reordered or deleted lesson
/// shows there after at most this long).
const OUTLINES: u64 = 10_000;
const OUTLINE_TTL: std::time::Duration = std::time::Duration::from_secs(15);
/// The cache whose keys are course ids, invalidated when this service learns a course
/// changed: answers that mention the course carry its tag, so the gateway's edge cache
/// drops them then (not when the course service changed it, before discovery knew).
pub const ANSWERS_CACHE: &str = "discovery_answers";
/// Events per transaction, and how long a batch waits for more after its first.
pub const BATCH: usize = 200;
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(5);
/// The topics it consumes.
pub const TOPICS: [&str; 4] = [
    topics::COURSE,
    topics::LESSON,
    topics::ENROLLMENT,
    topics::PROGRESS,
];

/// The discovery domain: the database, this replica's index, and whether it is built.
#[derive(Clone)]
pub struct Discovery {
    db: Database,
    index: Arc<SearchIndex>,
    courses: Courses,
    /// Course outlines ("continue"), briefly.
    outlines: moka::future::Cache<String, Arc<CourseOutline>>,
    course_service: CourseClient,
    /// Names the answers that mention a course (tags of cached related courses).
    answers: Cache,
    ready: Arc<AtomicBool>,
    /// Wakes the follower when this replica's consumer committed a change.
    changed: Arc<Notify>,
}

impl Discovery {
    pub fn index(&self) -> &SearchIndex {
        &self.index
    }

    pub fn database(&self) -> &Database {
        &self.db
    }
}

pub struct DiscoveryModule {
    discovery: Discovery,
}

impl DiscoveryModule {
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// The consumer of one topic (a transaction per batch of events).
    pub fn consumer(&self, bus: Arc<dyn EventBus>, topic: &str) -> BatchConsumer<Ingest> {
        BatchConsumer::new(
            self.discovery.db.clone(),
            store::PROCESSED_TABLE,
            bus,
            topic,
            GROUP,
            Ingest {
                changed: self.discovery.changed.clone(),
            },
        )
        .with_batch(BATCH, LINGER)
    }

    /// This replica's follower (built by [`ServiceModule::background`]; benchmarks run one).
    pub fn follower(&self) -> Follower {
        let d = &self.discovery;
        Follower::new(
            d.db.clone(),
            d.index.clone(),
            d.courses.clone(),
            d.ready.clone(),
            d.changed.clone(),
        )
        .invalidating(d.answers.clone())
    }
}

#[async_trait]
impl ServiceModule for DiscoveryModule {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICES: &'static [&'static str] =
        &[duovarsity_proto::discovery::discovery_service_server::SERVICE_NAME];

    fn migrations() -> Migrations {
        store::migrations()
    }

    async fn open(context: &ServiceContext) -> Result<Self, OpenError> {
        let db = Database::open(&context.config.database(SERVICE), store::migrations()).await?;
        let index = SearchIndex::new()?;
        Ok(Self {
            discovery: Discovery {
                db,
                index: Arc::new(index),
                courses: Courses::default(),
                outlines: moka::future::Cache::builder()
                    .max_capacity(OUTLINES)
                    .time_to_live(OUTLINE_TTL)
                    .build(),
                answers: context.caches().await?.cache(ANSWERS_CACHE),
                course_service: CourseClient::new(
                    context
                        .config
                        .service_channel("course", CourseClient::endpoint)?,
                ),
                ready: Arc::new(AtomicBool::new(false)),
                changed: Arc::new(Notify::new()),
            },
        })
    }

    fn database(&self) -> &Database {
        &self.discovery.db
    }

    fn register(&self, server: GrpcServer) -> GrpcServer {
        server.add_service(DiscoveryServiceServer::new(DiscoveryGrpc(
            self.discovery.clone(),
        )))
    }

    /// Ready once its database answers and its index is built.
    fn probes(&self) -> Vec<Probe> {
        let ready = self.discovery.ready.clone();
        let built: Probe = Arc::new(move || {
            let ready = ready.load(Ordering::Acquire);
            Box::pin(async move {
                if ready {
                    Ok(())
                } else {
                    Err("discovery: the search index is being built".to_string())
                }
            })
        });
        vec![self.discovery.db.probe(SERVICE), built]
    }

    /// Consumes the catalog and enrollment topics, and keeps the index following the
    /// database, until `shutdown`.
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
        tasks.push(Box::pin(self.follower().run(shutdown)));
        tasks
    }
}
