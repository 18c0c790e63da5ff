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
//! Rooms: [`grpc`] holds thin handlers; [`store`] runs SQL and nothing else;
//! [`reindex`] replaces the catalog rows with what the owning services list.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod follow;
pub mod grpc;
mod highlight;
pub mod index;
pub mod ingest;
pub mod query;
pub mod reindex;
mod search;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::consumer::Consumer;
use duovarsity_common::events::{EventBus, topics};
use duovarsity_common::grpc::GrpcServer;
use duovarsity_common::health::Probe;
use duovarsity_module::{BackgroundTask, OpenError, ServiceContext, ServiceModule};
use duovarsity_proto::discovery::discovery_service_server::DiscoveryServiceServer;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::follow::Follower;
use crate::grpc::DiscoveryGrpc;
use crate::index::SearchIndex;
use crate::ingest::Ingest;

pub const SERVICE: &str = "discovery";
/// The consumer group of the discovery service on every topic it reads.
pub const GROUP: &str = "discovery";
/// The topics it consumes.
pub const TOPICS: [&str; 3] = [topics::COURSE, topics::LESSON, topics::ENROLLMENT];

/// The discovery domain: the database, this replica's index, and whether it is built.
#[derive(Clone)]
pub struct Discovery {
    db: Database,
    index: Arc<SearchIndex>,
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

    /// The consumer of one topic.
    pub fn consumer(&self, bus: Arc<dyn EventBus>, topic: &str) -> Consumer<Ingest> {
        Consumer::new(
            self.discovery.db.clone(),
            store::PROCESSED_TABLE,
            bus,
            topic,
            GROUP,
            Ingest {
                changed: self.discovery.changed.clone(),
            },
        )
    }

    /// This replica's follower (built by [`ServiceModule::background`]; benchmarks run one).
    pub fn follower(&self) -> Follower {
        let d = &self.discovery;
        Follower::new(
            d.db.clone(),
            d.index.clone(),
            d.ready.clone(),
            d.changed.clone(),
        )
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
        let mut tasks: Vec<BackgroundTask> = Vec::new();
        for topic in TOPICS {
            let consumer = self.consumer(bus.clone(), topic);
            let stop = shutdown.clone();
            tasks.push(Box::pin(async move {
                if let Err(error) = consumer.run(stop).await {
                    tracing::error!(%error, topic, "discovery consumer stopped");
                }
            }));
        }
        tasks.push(Box::pin(self.follower().run(shutdown)));
        tasks
    }
}
