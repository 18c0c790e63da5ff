//! The AI-routing service (`duovarsity.ai.v1.AiRoutingService`): an OpenAI-compatible
//! model router for the platform's learning tasks (hints, explanations, grading, tutoring
//! chat).
//!
//! Rooms: [`grpc`] holds the handlers; [`routing`] is the request path (plan, cache,
//! budget, attempts with fallback, settlement, usage); the rules live in [`policy`]
//! (which models, in which order), [`budget`] (daily budgets that hold across replicas),
//! [`caching`] (what is shared, under which key), [`context`] (the task's lesson, read
//! with the caller's access, and the prompts built from it), [`breaker`] and [`limits`] (provider
//! health and per-minute limits); [`catalog`] reads and validates the model catalog,
//! [`reload`] swaps it at run time; [`providers`] are the streaming HTTP clients (OpenAI
//! and compatible servers, Azure OpenAI, Anthropic) and the offline sandbox model;
//! [`usage`] records what each request cost, and `settlement` settles the reservation of a
//! request that was dropped part-way; `convert` maps the OpenAI-shaped protobuf.
#![forbid(unsafe_code)]

pub mod answer;
pub mod breaker;
pub mod budget;
pub mod caching;
pub mod catalog;
pub mod context;
mod convert;
pub mod grpc;
pub mod limits;
pub mod policy;
pub mod providers;
pub mod reload;
pub mod routing;
mod settlement;
pub mod store;
mod streaming;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use duovarsity_common::db::{Backend, Database, Migrations};
use duovarsity_common::events::EventBus;
use duovarsity_common::events::outbox::Outbox;
use duovarsity_common::grpc::GrpcServer;
use duovarsity_common::pubsub::RedisLink;
use duovarsity_config::Config;
use duovarsity_module::{BackgroundTask, OpenError, ServiceContext, ServiceModule};
use duovarsity_proto::ai::ai_routing_service_server::AiRoutingServiceServer;
use tokio_util::sync::CancellationToken;

use crate::budget::{Budgets, MemoryBudgets, RedisBudgets, SqlBudgets};
use crate::reload::CatalogHandle;

use crate::store::{OUTBOX_TABLE, migrations};

/// The cache of whole answers, keyed by [`caching::key`].
pub const ANSWER_CACHE: &str = "ai_answer";
/// How long a cached answer is served (its key covers everything that shapes it, so it
/// never goes stale; a day bounds how long an answer outlives a changed lesson).
pub const ANSWER_TTL: Duration = Duration::from_secs(24 * 60 * 60);

pub const SERVICE: &str = "ai-routing";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("AI-routing database: {0}")]
    Database(#[from] duovarsity_common::db::OpenError),
    #[error("DUOVARSITY_AI_CATALOG_FILE: {0}")]
    Catalog(#[from] catalog::CatalogError),
    #[error("DUOVARSITY_REDIS_URL (AI budgets): {0}")]
    Redis(#[from] redis::RedisError),
    #[error("AI budgets: {0}")]
    Budgets(#[from] duovarsity_common::Error),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("DUOVARSITY_COURSE_SERVICE_URL or DUOVARSITY_CONTENT_SERVICE_URL: {0}")]
    Services(#[from] tonic::transport::Error),
}

pub struct AiRoutingModule {
    db: Database,
    router: Router,
    /// The process's feature flags (`ai-tutor`).
    flags: duovarsity_common::flags::Flags,
    outbox: Outbox,
    /// Taken by [`ServiceModule::background`], which runs it.
    usage_task: std::sync::Mutex<Option<usage::UsageTask>>,
}

impl AiRoutingModule {
    async fn start(
        config: &Config,
        caches: &duovarsity_common::cache::CacheHub,
    ) -> Result<Self, StartError> {
        let db = Database::open(&config.database(SERVICE), migrations()).await?;
        // Connections to providers are reused; each call's deadlines come from the policy.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .build()?;
        let catalog = CatalogHandle::load(config.ai_catalog_file.clone(), http)?;
        let budgets: Arc<dyn Budgets> = match &config.redis_url {
            Some(url) => {
                let client = redis::Client::open(url.expose().as_str())?;
                let link = RedisLink::connect(
                    client,
                    duovarsity_common::pubsub::REDIS_DEADLINE,
                    Duration::from_secs(1),
                    "AI requests that need a budget answer 503",
                )
                .await?;
                Arc::new(RedisBudgets::new(link))
            }
            None if db.backend() == Backend::Sqlite => Arc::new(MemoryBudgets::seeded(&db).await?),
            None => Arc::new(SqlBudgets::new(db.clone())),
        };
        let outbox = Outbox::new(OUTBOX_TABLE);
        let (usage, usage_task) = usage::UsageWriter::channel(db.clone(), outbox.clone());
        let router = Router {
            catalog,
            breakers: Arc::default(),
            limits: Arc::default(),
            budgets,
            cache: caches.immutable_cache(ANSWER_CACHE, ANSWER_TTL),
            db: db.clone(),
            usage,
            lessons: context::Lessons::connect(config)?,
        };
        Ok(Self {
            db,
            router,
            flags: duovarsity_common::flags::Flags::new(),
            outbox,
            usage_task: std::sync::Mutex::new(Some(usage_task)),
        })
    }

    pub fn router(&self) -> &Router {
        &self.router
    }
}

#[async_trait]
impl ServiceModule for AiRoutingModule {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICES: &'static [&'static str] =
        &[duovarsity_proto::ai::ai_routing_service_server::SERVICE_NAME];

    fn migrations() -> Migrations {
        migrations()
    }

    async fn open(context: &ServiceContext) -> Result<Self, OpenError> {
        let caches = context.caches().await?;
        let mut module = Self::start(&context.config, &caches).await?;
        module.flags = context.flags().await?.flags;
        Ok(module)
    }

    fn database(&self) -> &Database {
        &self.db
    }

    fn register(&self, server: GrpcServer) -> GrpcServer {
        server.add_service(AiRoutingServiceServer::new(grpc::AiGrpc {
            router: self.router.clone(),
            flags: self.flags.clone(),
        }))
    }

    /// Writes usage, publishes its events and watches the catalog file.
    fn background(
        &self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Vec<BackgroundTask> {
        let relay = self.outbox.relay(self.db.clone(), bus.clone());
        let mut tasks: Vec<BackgroundTask> = vec![
            Box::pin(relay.run(shutdown.clone())),
            Box::pin(self.router.catalog.clone().watch(
                shutdown.clone(),
                duovarsity_common::reload::Audit::new(bus.clone()),
            )),
        ];
        let usage = self
            .usage_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(usage) = usage {
            tasks.push(Box::pin(usage.run(shutdown)));
        }
        tasks
    }
}

/// The AI router: see [`routing`] for what it does with a request, [`streaming`] for
/// streamed answers and `settlement` for what a dropped one pays.
#[derive(Clone)]
pub struct Router {
    pub(crate) catalog: CatalogHandle,
    pub(crate) breakers: Arc<crate::breaker::Breakers>,
    pub(crate) limits: Arc<crate::limits::Limits>,
    pub(crate) budgets: Arc<dyn Budgets>,
    pub(crate) cache: duovarsity_common::cache::Cache,
    pub(crate) db: duovarsity_common::db::Database,
    pub(crate) usage: crate::usage::UsageWriter,
    pub(crate) lessons: crate::context::Lessons,
}
