//! The `duovarsity` platform composed from the service libraries through one table,
//! [`MODULES`]: [`Platform::start`] runs every service's gRPC server and the gateway in one
//! process (the embedded mode), or one component alone ([`Component`]); [`migrate`] applies
//! every service's schema. Tests start the same thing on port 0.
#![forbid(unsafe_code)]

pub mod seed;
pub mod warm;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use duovarsity_ai_routing::AiRoutingModule;
use duovarsity_common::auth::{RemoteJwks, TokenVerifier};
use duovarsity_common::cache::CacheHub;
use duovarsity_common::db::Database;
use duovarsity_common::events::EventBus;
use duovarsity_common::events::embedded::EmbeddedBus;
use duovarsity_common::events::kafka::KafkaBus;
use duovarsity_common::grpc::{AuthLayer, GrpcServer};
use duovarsity_config::Config;
use duovarsity_content::ContentModule;
use duovarsity_course::CourseModule;
use duovarsity_gateway::Gateway;
use duovarsity_module::{ModuleEntry, RunningModule, ServiceContext, ServiceModule, Upstream};
use duovarsity_notification::NotificationModule;
use duovarsity_payment::PaymentModule;
use duovarsity_proto::user::Role;
use duovarsity_user::UserModule;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Every service of the platform, once. `up`, `serve <name>`, `migrate`, readiness,
/// background work, shutdown and the gateway's upstreams all loop over this table: adding a
/// service is a proto file, a crate implementing [`ServiceModule`], and one line here
/// (`docs/adding-a-service.md`).
///
/// [`ServiceModule`]: duovarsity_module::ServiceModule
pub const MODULES: &[ModuleEntry] = &[
    ModuleEntry::of::<UserModule>(),
    ModuleEntry::of::<CourseModule>(),
    ModuleEntry::of::<ContentModule>(),
    ModuleEntry::of::<NotificationModule>(),
    ModuleEntry::of::<PaymentModule>(),
    ModuleEntry::of::<AiRoutingModule>(),
];

/// The configuration names of [`MODULES`], in table order.
pub fn module_names() -> Vec<&'static str> {
    MODULES.iter().map(|entry| entry.name).collect()
}

/// The module named `name`, or an error that lists the names there are.
pub fn module(name: &str) -> anyhow::Result<&'static ModuleEntry> {
    MODULES
        .iter()
        .find(|entry| entry.name == name)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "there is no service named {name:?} (services: {})",
                module_names().join(", ")
            )
        })
}

/// Checks what the configuration says about the module table (service URL names).
pub fn check_config(config: &Config) -> Result<(), duovarsity_config::ConfigError> {
    config.check_service_names(&module_names())
}

/// What one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// Every service of [`MODULES`] on `grpc_addr` and the gateway on `http_addr`.
    All,
    /// One service of [`MODULES`], by name, alone on `grpc_addr`. It verifies tokens with
    /// the user service's JWKS and reaches other services at their configured URLs.
    Service(&'static str),
    /// The gateway alone, on `http_addr`, calling configured upstreams.
    Gateway,
}

/// A running platform (or component).
pub struct Platform {
    http_addr: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    modules: Vec<Arc<dyn RunningModule>>,
    /// None for the gateway alone.
    bus: Option<Arc<dyn EventBus>>,
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

impl Platform {
    /// Binds the listeners (port 0 picks a free port), opens storage and starts serving.
    pub async fn start(mut config: Config, component: Component) -> anyhow::Result<Self> {
        // The metrics recorder must exist before the first request records anything.
        duovarsity_common::telemetry::metrics_handle();
        check_config(&config)?;
        let entries: Vec<&ModuleEntry> = match component {
            Component::All => MODULES.iter().collect(),
            Component::Service(name) => vec![module(name)?],
            Component::Gateway => Vec::new(),
        };
        let shutdown = CancellationToken::new();
        let bus = match component {
            Component::Gateway => None,
            Component::All => Some(open_bus(&config, "bus.db").await?),
            Component::Service(name) => Some(open_bus(&config, &format!("{name}-bus.db")).await?),
        };
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let mut tasks = JoinSet::new();
        let admin_listener = TcpListener::bind(config.admin_addr)
            .await
            .with_context(|| {
                format!(
                    "binding the admin listener on {} (DUOVARSITY_ADMIN_ADDR)",
                    config.admin_addr
                )
            })?;
        let admin_addr = admin_listener.local_addr()?;
        let mut admin_routes = None;
        let mut grpc_addr = None;
        let mut modules = Vec::new();
        // Bound first, so that the modules opened beside the gateway know its address
        // (port 0 resolved) for the pages they serve on it.
        let mut http_listener = None;
        let mut http_addr = None;
        // The services' caches, whose invalidations the gateway's edge cache follows, and
        // the services themselves, which it calls in process (embedded mode).
        let mut caches = None;
        let mut local = None;
        if matches!(component, Component::All | Component::Gateway) {
            let listener = TcpListener::bind(config.http_addr).await.with_context(|| {
                format!(
                    "binding HTTP on {} (DUOVARSITY_HTTP_ADDR)",
                    config.http_addr
                )
            })?;
            let addr = listener.local_addr()?;
            config.http_addr = addr;
            http_addr = Some(addr);
            http_listener = Some(listener);
        }

        if !entries.is_empty() {
            let listener = TcpListener::bind(config.grpc_addr).await.with_context(|| {
                format!(
                    "binding gRPC on {} (DUOVARSITY_GRPC_ADDR)",
                    config.grpc_addr
                )
            })?;
            let addr = listener.local_addr()?;
            grpc_addr = Some(addr);
            if component == Component::All {
                // Embedded: every service and the gateway's upstreams are this listener.
                for entry in MODULES {
                    config.default_service_url(entry.name, &format!("http://{addr}"));
                }
            }
            let bus = bus
                .clone()
                .context("a process that runs services has a bus")?;
            let mut context = ServiceContext::new(config.clone());
            if component == Component::All {
                context = context.with_gateway();
            }
            for entry in &entries {
                let module = (entry.open)(&context)
                    .await
                    .map_err(|error| anyhow::anyhow!(error))
                    .with_context(|| format!("starting the {} service", entry.name))?;
                modules.push(module);
            }
            if component == Component::All {
                caches = Some(context.caches().await.context("the shared caches")?);
            }
            let source = match modules.iter().find_map(|module| module.local_keys()) {
                Some(source) => source,
                None => Arc::new(RemoteJwks::new(
                    config
                        .service_channel("user", RemoteJwks::endpoint)
                        .context("DUOVARSITY_USER_SERVICE_URL")?,
                )),
            };
            let verifier = Arc::new(
                TokenVerifier::new(source, Duration::from_secs(10))
                    .refreshing_every(Duration::from_secs(config.jwks_refresh_secs)),
            );
            let mut server = GrpcServer::new(AuthLayer::new(verifier));
            if component == Component::All {
                local = Some((format!("http://{addr}"), server.local()));
            }
            for module in &modules {
                server = module.register(server);
                for probe in module.probes() {
                    server = server.probe(probe);
                }
                for task in module.background(bus.clone(), shutdown.clone()) {
                    tasks.spawn(async move {
                        task.await;
                        Ok(())
                    });
                }
            }
            let stop = shutdown.clone();
            tasks.spawn(async move {
                server
                    .run(listener, stop, grace)
                    .await
                    .context("gRPC server")
            });
        }

        if matches!(component, Component::All | Component::Gateway) {
            let upstreams: Vec<Upstream> = MODULES.iter().map(Upstream::from).collect();
            let caches = match caches.take() {
                Some(caches) => caches,
                None => CacheHub::connect(config.cache_settings()).await.context(
                    "connecting the gateway's edge cache to Redis (DUOVARSITY_REDIS_URL)",
                )?,
            };
            let local = match local.take() {
                Some((url, services)) => Some((
                    url,
                    services
                        .await
                        .context("the gRPC server stopped before serving")?,
                )),
                None => None,
            };
            let gateway = Gateway::new(&config, &upstreams, &caches, local)
                .context("starting the gateway")?;
            let listener = http_listener
                .take()
                .context("a process that runs the gateway has an HTTP listener")?;
            let limits = duovarsity_gateway::RateLimiter::start(
                &config,
                gateway.verifier(),
                shutdown.clone(),
            )
            .await
            .context("starting the gateway's rate limits")?;
            let pages = modules.iter().filter_map(|m| m.http_routes()).collect();
            let router = gateway.router(&config.cors_allowed_origins, limits, pages);
            admin_routes = Some(gateway.admin_routes());
            let closing = shutdown.clone();
            let live = gateway.clone();
            tasks.spawn(async move {
                closing.cancelled().await;
                live.close_live_connections();
                Ok(())
            });
            let stop = shutdown.clone();
            let limits = duovarsity_gateway::EdgeLimits {
                header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
                max_connections: config.max_connections,
                http2_max_streams: config.http2_max_streams,
            };
            tasks.spawn(async move {
                duovarsity_gateway::run(listener, router, stop, grace, limits)
                    .await
                    .context("HTTP server")
            });
        }

        let stop = shutdown.clone();
        tasks.spawn(async move {
            duovarsity_common::admin::serve(admin_listener, admin_routes, stop)
                .await
                .context("admin listener")
        });

        Ok(Self {
            http_addr,
            grpc_addr,
            admin_addr,
            shutdown,
            tasks,
            modules,
            bus,
        })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// The admin listener (`/metrics`, `/healthz`; the gateway's `/status`, `/readyz`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The event bus the services publish to (none for the gateway alone).
    pub fn bus(&self) -> Option<Arc<dyn EventBus>> {
        self.bus.clone()
    }

    /// Cancelling this token stops the platform.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until a server stops by itself (an error) or shutdown is requested, then
    /// drains everything and closes every module.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let first = tokio::select! {
            () = self.shutdown.cancelled() => Ok(()),
            Some(joined) = self.tasks.join_next() => {
                self.shutdown.cancel();
                joined.context("server task panicked").and_then(|r| r)
            }
        };
        let mut result = first;
        while let Some(joined) = self.tasks.join_next().await {
            let outcome = joined.context("server task panicked").and_then(|r| r);
            if result.is_ok() {
                result = outcome;
            }
        }
        for module in &self.modules {
            module.close().await;
        }
        if let Some(bus) = &self.bus {
            bus.close().await;
        }
        result
    }

    /// Requests shutdown and waits for the drain.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// What `duovarsity migrate` did to one service's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub service: &'static str,
    /// The migrations it applied now (`<version>_<description>`); empty: up to date.
    pub applied: Vec<String>,
}

/// Applies the migrations of every service of [`MODULES`] (or of `only` that one) to the
/// configured database(s), idempotently: `migrate_database_url` when set (PostgreSQL
/// directly, past a pooler), else `database_url`.
pub async fn migrate(config: &Config, only: Option<&str>) -> anyhow::Result<Vec<Migrated>> {
    let direct = config.migrate_database_url.as_ref().map(|url| Config {
        database_url: Some(url.clone()),
        ..config.clone()
    });
    let config = direct.as_ref().unwrap_or(config);
    let entries: Vec<&ModuleEntry> = match only {
        Some(name) => vec![module(name)?],
        None => MODULES.iter().collect(),
    };
    let mut report = Vec::new();
    for entry in entries {
        let db = Database::connect_service(&config.database(entry.name))
            .await
            .with_context(|| format!("connecting the {} database", entry.name))?;
        let applied = db.migrate_reporting(&(entry.migrations)()).await;
        db.close().await;
        report.push(Migrated {
            service: entry.name,
            applied: applied.with_context(|| format!("migrating the {} service", entry.name))?,
        });
    }
    Ok(report)
}

/// One module opened outside a platform, for admin commands (seed, create-user): the same
/// way in as `serve` ([`ServiceModule::open`]), without a server or background work.
pub(crate) async fn open_alone<M: ServiceModule>(config: &Config) -> anyhow::Result<M> {
    M::open(&ServiceContext::new(config.clone()))
        .await
        .map_err(|error| anyhow::anyhow!(error))
        .with_context(|| format!("opening the {} service", M::NAME))
}

/// Creates an account with a role on the configured database.
pub async fn create_user(
    config: &Config,
    email: &str,
    password: &str,
    display_name: &str,
    role: Role,
) -> anyhow::Result<duovarsity_proto::user::User> {
    let user: UserModule = open_alone(config).await?;
    let created = user
        .users()
        .create_account(email, password, display_name, role, false)
        .await;
    ServiceModule::close(&user).await;
    created.map_err(|error| match error {
        duovarsity_common::Error::InvalidArgument(violations) => anyhow::anyhow!(
            "{}",
            violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => anyhow::anyhow!("{other}"),
    })
}
