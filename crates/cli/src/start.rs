//! How each kind of process starts, one small function per [`Component`]: the embedded
//! platform (every module of the table and the gateway, which calls them in process), one
//! service alone, and the gateway alone. They share the steps: bind a listener, open the
//! modules and serve them over gRPC, serve the gateway, serve the admin listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use duovarsity_common::auth::{RemoteJwks, TokenVerifier};
use duovarsity_common::cache::CacheHub;
use duovarsity_common::events::EventBus;
use duovarsity_common::events::embedded::EmbeddedBus;
use duovarsity_common::events::kafka::KafkaBus;
use duovarsity_common::grpc::{AuthLayer, GrpcServer, LocalGrpc};
use duovarsity_common::reload::Audit;
use duovarsity_config::Config;
use duovarsity_gateway::Gateway;
use duovarsity_module::{ModuleEntry, RunningModule, ServiceContext, Upstream};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{MODULES, Platform};

/// What every kind of process has while it starts: its shutdown token, its tasks, and its
/// admin listener.
struct Starting {
    config: Config,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    grace: Duration,
    admin_listener: TcpListener,
}

/// The modules of a process, serving over gRPC.
struct Services {
    addr: SocketAddr,
    modules: Vec<Arc<dyn RunningModule>>,
    bus: Arc<dyn EventBus>,
    /// The process's caches, for the embedded gateway's edge cache to follow.
    caches: Option<CacheHub>,
    /// The services as an in-process transport, for the embedded gateway.
    local: Option<LocalGrpc>,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} on {addr}"))
}

/// Kafka when `kafka_brokers` is set; otherwise the embedded bus, in `file` of the data
/// directory (events stay inside this process).
async fn open_bus(config: &Config, file: &str) -> anyhow::Result<Arc<dyn EventBus>> {
    if let Some(settings) = config.kafka_settings() {
        let bus = KafkaBus::connect(settings)
            .context("connecting to Kafka (DUOVARSITY_KAFKA_BROKERS)")?;
        return Ok(Arc::new(bus));
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let path = config.data_dir.join(file);
    let bus = EmbeddedBus::open(&path, config.bus_settings())
        .await
        .with_context(|| format!("opening the embedded event bus {}", path.display()))?;
    Ok(Arc::new(bus))
}

impl Starting {
    async fn new(config: Config) -> anyhow::Result<Self> {
        // The metrics recorder must exist before the first request records anything.
        duovarsity_common::telemetry::metrics_handle();
        crate::check_config(&config)?;
        let admin_listener = bind(
            config.admin_addr,
            "the admin listener (DUOVARSITY_ADMIN_ADDR)",
        )
        .await?;
        Ok(Self {
            grace: Duration::from_secs(config.shutdown_grace_secs),
            config,
            shutdown: CancellationToken::new(),
            tasks: JoinSet::new(),
            admin_listener,
        })
    }

    /// Opens `entries` on `listener` and serves them; their background tasks run until
    /// shutdown. `embedded`: the gateway of this process serves their pages and calls them
    /// in process.
    async fn services(
        &mut self,
        entries: &[&ModuleEntry],
        listener: TcpListener,
        bus: Arc<dyn EventBus>,
        embedded: bool,
    ) -> anyhow::Result<Services> {
        let addr = listener.local_addr()?;
        let mut context =
            ServiceContext::new(self.config.clone()).with_shutdown(self.shutdown.clone());
        if embedded {
            context = context.with_gateway();
        }
        let mut modules = Vec::new();
        for entry in entries {
            let module = (entry.open)(&context)
                .await
                .map_err(|error| anyhow::anyhow!(error))
                .with_context(|| format!("starting the {} service", entry.name))?;
            modules.push(module);
        }
        let caches = if embedded {
            Some(context.caches().await.context("the shared caches")?)
        } else {
            None
        };
        let source = match modules.iter().find_map(|module| module.local_keys()) {
            Some(source) => source,
            None => Arc::new(RemoteJwks::new(
                self.config
                    .service_channel("user", RemoteJwks::endpoint)
                    .context("DUOVARSITY_USER_SERVICE_URL")?,
            )),
        };
        let verifier = Arc::new(
            TokenVerifier::new(source, Duration::from_secs(10))
                .refreshing_every(Duration::from_secs(self.config.jwks_refresh_secs)),
        );
        let mut server = GrpcServer::new(AuthLayer::new(verifier));
        let local = embedded.then(|| server.local());
        for module in &modules {
            server = module.register(server);
            for probe in module.probes() {
                server = server.probe(probe);
            }
            for task in module.background(bus.clone(), self.shutdown.clone()) {
                self.tasks.spawn(async move {
                    task.await;
                    Ok(())
                });
            }
        }
        let (stop, grace) = (self.shutdown.clone(), self.grace);
        self.tasks.spawn(async move {
            server
                .run(listener, stop, grace)
                .await
                .context("gRPC server")
        });
        let local = match local {
            Some(local) => Some(
                local
                    .await
                    .context("the gRPC server stopped before serving")?,
            ),
            None => None,
        };
        Ok(Services {
            addr,
            modules,
            bus,
            caches,
            local,
        })
    }

    /// Serves the gateway on `listener`; returns its routes for the admin listener.
    async fn gateway(
        &mut self,
        listener: TcpListener,
        caches: &CacheHub,
        local: Option<(String, LocalGrpc)>,
        modules: &[Arc<dyn RunningModule>],
        audit: Audit,
    ) -> anyhow::Result<axum::Router> {
        let config = &self.config;
        let upstreams: Vec<Upstream> = MODULES.iter().map(Upstream::from).collect();
        let gateway =
            Gateway::new(config, &upstreams, caches, local).context("starting the gateway")?;
        let limits = duovarsity_gateway::RateLimiter::start(
            config,
            gateway.verifier(),
            self.shutdown.clone(),
            audit,
        )
        .await
        .context("starting the gateway's rate limits")?;
        let pages = modules.iter().filter_map(|m| m.http_routes()).collect();
        let router = gateway.router(&config.cors_allowed_origins, limits, pages);
        let closing = self.shutdown.clone();
        let live = gateway.clone();
        self.tasks.spawn(async move {
            closing.cancelled().await;
            live.close_live_connections();
            Ok(())
        });
        let (stop, grace) = (self.shutdown.clone(), self.grace);
        let limits = duovarsity_gateway::EdgeLimits {
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            max_connections: config.max_connections,
            http2_max_streams: config.http2_max_streams,
        };
        self.tasks.spawn(async move {
            duovarsity_gateway::run(listener, router, stop, grace, limits)
                .await
                .context("HTTP server")
        });
        Ok(gateway.admin_routes())
    }

    /// Serves the admin listener and hands the running process over.
    fn finish(
        mut self,
        admin_routes: Option<axum::Router>,
        http_addr: Option<SocketAddr>,
        services: Option<Services>,
    ) -> anyhow::Result<Platform> {
        let admin_addr = self.admin_listener.local_addr()?;
        let stop = self.shutdown.clone();
        let listener = self.admin_listener;
        self.tasks.spawn(async move {
            duovarsity_common::admin::serve(listener, admin_routes, stop)
                .await
                .context("admin listener")
        });
        let (grpc_addr, modules, bus) = match services {
            Some(services) => (Some(services.addr), services.modules, Some(services.bus)),
            None => (None, Vec::new(), None),
        };
        Ok(Platform {
            http_addr,
            grpc_addr,
            admin_addr,
            shutdown: self.shutdown,
            tasks: self.tasks,
            modules,
            bus,
        })
    }
}

/// Every module of the table and the gateway in one process: the gateway's upstreams are
/// this process's gRPC listener, called in process.
pub(crate) async fn embedded(config: Config) -> anyhow::Result<Platform> {
    let mut starting = Starting::new(config).await?;
    let bus = open_bus(&starting.config, "bus.db").await?;
    // Bound first, so that the modules opened beside the gateway know its address (port 0
    // resolved) for the pages they serve on it.
    let http = bind(starting.config.http_addr, "HTTP (DUOVARSITY_HTTP_ADDR)").await?;
    let http_addr = http.local_addr()?;
    starting.config.http_addr = http_addr;
    let grpc = bind(starting.config.grpc_addr, "gRPC (DUOVARSITY_GRPC_ADDR)").await?;
    let url = format!("http://{}", grpc.local_addr()?);
    for entry in MODULES {
        starting.config.default_service_url(entry.name, &url);
    }
    let entries: Vec<&ModuleEntry> = MODULES.iter().collect();
    let mut services = starting.services(&entries, grpc, bus, true).await?;
    let caches = services
        .caches
        .take()
        .context("an embedded process has the services' caches")?;
    let local = services.local.take().map(|local| (url, local));
    let audit = Audit::new(services.bus.clone());
    let admin = starting
        .gateway(http, &caches, local, &services.modules, audit)
        .await?;
    starting.finish(Some(admin), Some(http_addr), Some(services))
}

/// One service alone on its gRPC listener, with a bus of its own.
pub(crate) async fn service(config: Config, entry: &ModuleEntry) -> anyhow::Result<Platform> {
    let mut starting = Starting::new(config).await?;
    let bus = open_bus(&starting.config, &format!("{}-bus.db", entry.name)).await?;
    let grpc = bind(starting.config.grpc_addr, "gRPC (DUOVARSITY_GRPC_ADDR)").await?;
    let services = starting.services(&[entry], grpc, bus, false).await?;
    starting.finish(None, None, Some(services))
}

/// The gateway alone, calling the configured upstreams; its edge cache follows the
/// services' invalidations through Redis.
pub(crate) async fn gateway(config: Config) -> anyhow::Result<Platform> {
    let mut starting = Starting::new(config).await?;
    let http = bind(starting.config.http_addr, "HTTP (DUOVARSITY_HTTP_ADDR)").await?;
    let http_addr = http.local_addr()?;
    starting.config.http_addr = http_addr;
    let caches = CacheHub::connect(starting.config.cache_settings())
        .await
        .context("connecting the gateway's edge cache to Redis (DUOVARSITY_REDIS_URL)")?;
    // Reloads of the rate-limit policy reach the audit trail through Kafka when it is
    // configured; a gateway without a broker only logs and counts them.
    let audit = match starting.config.kafka_brokers {
        Some(_) => Audit::new(open_bus(&starting.config, "gateway-bus.db").await?),
        None => Audit::default(),
    };
    let admin = starting.gateway(http, &caches, None, &[], audit).await?;
    starting.finish(Some(admin), Some(http_addr), None)
}
