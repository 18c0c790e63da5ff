//! The service-module contract: what every service crate gives the platform so that one
//! table of modules composes them (`duovarsity up`), runs one (`serve <name>`), migrates
//! them (`duovarsity migrate`), asks whether they are ready and closes them.
//!
//! A service implements [`ServiceModule`]; the CLI lists `ModuleEntry::of::<M>()` once per
//! service and loops over that list for everything else. The entry's `name` is the
//! service's configuration name: its `serve` argument, its SQLite file
//! (`<data_dir>/<name>.db`) and its upstream variable `DUOVARSITY_<NAME>_SERVICE_URL`.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use duovarsity_common::auth::KeySource;
use duovarsity_common::cache::CacheHub;
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::EventBus;
use duovarsity_common::flags::distribution::Distribution;
use duovarsity_common::grpc::GrpcServer;
use duovarsity_common::health::Probe;
use duovarsity_config::Config;

/// Why a module could not open: its own start error, with the cause chain kept.
pub type OpenError = Box<dyn std::error::Error + Send + Sync>;

/// A background task of a module (an outbox relay, a consumer, a mailer): it runs until the
/// shutdown token it was given is cancelled.
pub type BackgroundTask = BoxFuture<'static, ()>;

/// What a module opens with: the configuration and the process's shared caches. (The event
/// bus is handed to [`ServiceModule::background`]; opening never publishes.)
pub struct ServiceContext {
    pub config: Config,
    /// The gateway runs in this process on `config.http_addr` and serves the modules'
    /// [`ServiceModule::http_routes`] (`duovarsity up`).
    pub with_gateway: bool,
    caches: OnceCell<CacheHub>,
    flags: OnceCell<Distribution>,
    /// Stops the process-wide followers (flags): the platform's shutdown.
    stop: CancellationToken,
}

impl ServiceContext {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            with_gateway: false,
            caches: OnceCell::new(),
            flags: OnceCell::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Process-wide followers (flags) stop when `shutdown` is cancelled.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.stop = shutdown;
        self
    }

    /// The context of a process whose gateway serves the modules' HTTP routes.
    pub fn with_gateway(mut self) -> Self {
        self.with_gateway = true;
        self
    }

    /// The process's two-level cache hub, connected (to Redis when configured) the first
    /// time a module asks, then shared by every module of the process.
    pub async fn caches(&self) -> Result<CacheHub, CachesError> {
        self.caches
            .get_or_try_init(|| CacheHub::connect(self.config.cache_settings()))
            .await
            .cloned()
            .map_err(CachesError)
    }
}

impl ServiceContext {
    /// The process's feature flags, shared by every module of the process: followed
    /// through Redis when configured (connected the first time a module asks), published
    /// by the user service, which owns them.
    pub async fn flags(&self) -> Result<Distribution, CachesError> {
        self.flags
            .get_or_try_init(|| {
                Distribution::connect(
                    self.config
                        .redis_url
                        .as_ref()
                        .map(|url| url.expose().as_str()),
                    std::time::Duration::from_secs(self.config.flags_reload_secs),
                    self.stop.clone(),
                )
            })
            .await
            .cloned()
            .map_err(CachesError)
    }
}

/// The shared caches could not connect to Redis.
#[derive(Debug, thiserror::Error)]
#[error("connecting to Redis (DUOVARSITY_REDIS_URL): {0}")]
pub struct CachesError(redis::RedisError);

/// One service of the platform.
#[async_trait]
pub trait ServiceModule: Send + Sync + 'static {
    /// The configuration name (`user`, `course`, ...).
    const NAME: &'static str;
    /// Full names of the gRPC services it serves (`duovarsity.user.v1.UserService`); the
    /// gateway routes each one to this module's upstream URLs.
    const GRPC_SERVICES: &'static [&'static str];

    /// Its schema, per backend.
    fn migrations() -> Migrations;

    /// Connects its storage (migrating it unless `migrate_on_start` is off) and builds its
    /// handlers.
    async fn open(context: &ServiceContext) -> Result<Self, OpenError>
    where
        Self: Sized;

    /// Adds its gRPC services to the server (the platform adds [`Self::probes`]).
    fn register(&self, server: GrpcServer) -> GrpcServer;

    /// Its database: what its readiness checks and [`Self::close`] closes by default.
    fn database(&self) -> &Database;

    /// Its readiness checks: by default, that its database answers (Redis is not
    /// needed to answer, and a cache outage must not make every replica unready).
    fn probes(&self) -> Vec<Probe> {
        vec![self.database().probe(Self::NAME)]
    }

    /// Work that runs beside the server until `shutdown`: relays, consumers, mailers.
    fn background(
        &self,
        _bus: Arc<dyn EventBus>,
        _shutdown: CancellationToken,
    ) -> Vec<BackgroundTask> {
        Vec::new()
    }

    /// Signing keys held in this process, so that verifiers beside it need no JWKS fetch
    /// (only the user service has them).
    fn local_keys(&self) -> Option<Arc<dyn KeySource>> {
        None
    }

    /// Plain HTTP routes the module serves on the gateway's listener when the whole
    /// platform runs in one process (the payment sandbox's API and checkout page); a
    /// service running alone serves none.
    fn http_routes(&self) -> Option<axum::Router> {
        None
    }

    /// Releases its connections after the server has drained: by default its database.
    async fn close(&self) {
        self.database().close().await;
    }
}

/// An opened module, whatever its type.
#[async_trait]
pub trait RunningModule: Send + Sync {
    fn register(&self, server: GrpcServer) -> GrpcServer;
    fn probes(&self) -> Vec<Probe>;
    fn background(
        &self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Vec<BackgroundTask>;
    fn local_keys(&self) -> Option<Arc<dyn KeySource>>;
    fn http_routes(&self) -> Option<axum::Router>;
    async fn close(&self);
}

#[async_trait]
impl<M: ServiceModule> RunningModule for M {
    fn register(&self, server: GrpcServer) -> GrpcServer {
        ServiceModule::register(self, server)
    }
    fn probes(&self) -> Vec<Probe> {
        ServiceModule::probes(self)
    }
    fn background(
        &self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Vec<BackgroundTask> {
        ServiceModule::background(self, bus, shutdown)
    }
    fn local_keys(&self) -> Option<Arc<dyn KeySource>> {
        ServiceModule::local_keys(self)
    }
    fn http_routes(&self) -> Option<axum::Router> {
        ServiceModule::http_routes(self)
    }
    async fn close(&self) {
        ServiceModule::close(self).await;
    }
}

type OpenFn =
    for<'a> fn(&'a ServiceContext) -> BoxFuture<'a, Result<Arc<dyn RunningModule>, OpenError>>;

/// One row of the platform's module table.
#[derive(Clone, Copy)]
pub struct ModuleEntry {
    pub name: &'static str,
    pub grpc_services: &'static [&'static str],
    pub migrations: fn() -> Migrations,
    pub open: OpenFn,
}

impl ModuleEntry {
    pub const fn of<M: ServiceModule>() -> Self {
        Self {
            name: M::NAME,
            grpc_services: M::GRPC_SERVICES,
            migrations: M::migrations,
            open: open_module::<M>,
        }
    }
}

impl std::fmt::Debug for ModuleEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleEntry")
            .field("name", &self.name)
            .field("grpc_services", &self.grpc_services)
            .finish_non_exhaustive()
    }
}

fn open_module<M: ServiceModule>(
    context: &ServiceContext,
) -> BoxFuture<'_, Result<Arc<dyn RunningModule>, OpenError>> {
    Box::pin(async move {
        let module = M::open(context).await?;
        Ok(Arc::new(module) as Arc<dyn RunningModule>)
    })
}

/// Which service (by configuration name) serves a gRPC service, for the gateway.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    pub name: &'static str,
    pub grpc_services: &'static [&'static str],
}

impl From<&ModuleEntry> for Upstream {
    fn from(entry: &ModuleEntry) -> Self {
        Self {
            name: entry.name,
            grpc_services: entry.grpc_services,
        }
    }
}
