//! The `duovarsity` platform composed from the service libraries through one table,
//! [`MODULES`]: [`Platform::start`] runs every service's gRPC server and the gateway in one
//! process (the embedded mode), or one component alone ([`Component`]); [`migrate`] applies
//! every service's schema. Tests start the same thing on port 0.
#![forbid(unsafe_code)]

pub mod discovery;
pub mod generated;
pub mod seed;
mod start;
pub mod tracks;
pub mod warm;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use duovarsity_ai_routing::AiRoutingModule;
use duovarsity_analytics::AnalyticsModule;
use duovarsity_common::db::Database;
use duovarsity_common::events::EventBus;
use duovarsity_config::Config;
use duovarsity_content::ContentModule;
use duovarsity_course::CourseModule;
use duovarsity_discovery::DiscoveryModule;
use duovarsity_module::{ModuleEntry, RunningModule, ServiceContext, ServiceModule};
use duovarsity_notification::NotificationModule;
use duovarsity_payment::PaymentModule;
use duovarsity_proto::user::Role;
use duovarsity_user::UserModule;
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
    ModuleEntry::of::<AnalyticsModule>(),
    ModuleEntry::of::<DiscoveryModule>(),
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

impl Platform {
    /// Binds the listeners (port 0 picks a free port), opens storage and starts serving:
    /// one function per kind of process ([`start`]).
    pub async fn start(config: Config, component: Component) -> anyhow::Result<Self> {
        match component {
            Component::All => start::embedded(config).await,
            Component::Service(name) => start::service(config, module(name)?).await,
            Component::Gateway => start::gateway(config).await,
        }
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

/// Rebuilds the leaderboards' Redis sorted sets from the analytics database; returns the
/// members written.
pub async fn rebuild_leaderboards(config: &Config) -> anyhow::Result<usize> {
    if config.redis_url.is_none() {
        anyhow::bail!(
            "leaderboards are read from the database when DUOVARSITY_REDIS_URL is not set; there is nothing to rebuild"
        );
    }
    let analytics: AnalyticsModule = open_alone(config).await?;
    let rebuilt = analytics.analytics().leaderboards().rebuild().await;
    ServiceModule::close(&analytics).await;
    rebuilt.map_err(|error| anyhow::anyhow!("{error}"))
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
