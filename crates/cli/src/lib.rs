//! The `duovarsity` platform composed from the service libraries: [`Platform::start`] runs
//! every service's gRPC server and the gateway in one process (the embedded mode), or one
//! component alone ([`Component`]). Tests start the same thing on port 0.
#![forbid(unsafe_code)]

pub mod seed;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use duovarsity_common::Config;
use duovarsity_common::auth::TokenVerifier;
use duovarsity_common::cache::CacheHub;
use duovarsity_common::events::EventBus;
use duovarsity_common::events::kafka::KafkaBus;
use duovarsity_common::events::memory::MemoryBus;
use duovarsity_common::events::outbox::OutboxRelay;
use duovarsity_common::grpc::{AuthLayer, GrpcServer};
use duovarsity_content::ContentModule;
use duovarsity_course::CourseModule;
use duovarsity_gateway::Gateway;
use duovarsity_notification::NotificationModule;
use duovarsity_proto::user::Role;
use duovarsity_user::UserModule;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// Every service on `grpc_addr` and the gateway on `http_addr`.
    All,
    /// The user service alone, on `grpc_addr`.
    User,
    /// The course service alone, on `grpc_addr` (verifies tokens with the user service's
    /// JWKS at `user_service_url`).
    Course,
    /// The content service alone, on `grpc_addr` (asks the course service at
    /// `course_service_url` who may read what).
    Content,
    /// The notification service alone, on `grpc_addr`.
    Notification,
    /// The gateway alone, on `http_addr`, calling configured upstreams.
    Gateway,
}

/// A running platform (or component).
pub struct Platform {
    http_addr: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    user: Option<Arc<UserModule>>,
    course: Option<Arc<CourseModule>>,
    content: Option<Arc<ContentModule>>,
    notification: Option<Arc<NotificationModule>>,
    bus: Arc<dyn EventBus>,
}

/// The in-process bus of one process: partitions per topic and records kept per partition
/// (bounded memory). Across processes events go through Kafka (`kafka_brokers`).
const BUS_PARTITIONS: u32 = 8;
const BUS_RETENTION: usize = 10_000;

impl Platform {
    /// Binds the listeners (port 0 picks a free port), opens storage and starts serving.
    pub async fn start(mut config: Config, component: Component) -> anyhow::Result<Self> {
        // The metrics recorder must exist before the first request records anything.
        duovarsity_common::telemetry::metrics_handle();
        let shutdown = CancellationToken::new();
        let bus: Arc<dyn EventBus> = match config.kafka_settings() {
            Some(settings) => Arc::new(
                KafkaBus::connect(settings)
                    .context("connecting to Kafka (DUOVARSITY_KAFKA_BROKERS)")?,
            ),
            None => Arc::new(MemoryBus::new(BUS_PARTITIONS, BUS_RETENTION)),
        };
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let mut tasks = JoinSet::new();
        let mut grpc_addr = None;
        let mut http_addr = None;
        let mut user_module = None;
        let mut course_module = None;
        let mut content_module = None;
        let mut notification_module = None;

        let runs_user = matches!(component, Component::All | Component::User);
        let runs_course = matches!(component, Component::All | Component::Course);
        let runs_content = matches!(component, Component::All | Component::Content);
        let runs_notification = matches!(component, Component::All | Component::Notification);
        if runs_user || runs_course || runs_content || runs_notification {
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
                let here = format!("http://{addr}");
                for url in [
                    &mut config.user_service_url,
                    &mut config.course_service_url,
                    &mut config.content_service_url,
                    &mut config.notification_service_url,
                ] {
                    url.get_or_insert_with(|| here.clone());
                }
            }
            let mut verifier_source: Option<Arc<dyn duovarsity_common::auth::KeySource>> = None;
            let mut server_parts = Vec::new();
            if runs_user {
                let user = Arc::new(
                    UserModule::open(&config)
                        .await
                        .context("starting the user service")?,
                );
                if let (Some(email), Some(password)) = (
                    &config.bootstrap_admin_email,
                    &config.bootstrap_admin_password,
                ) {
                    user.users()
                        .create_account(
                            email,
                            password.expose(),
                            "Administrator",
                            Role::Admin,
                            true,
                        )
                        .await
                        .map_err(|e| anyhow::anyhow!("DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL: {e}"))?;
                    tracing::info!(email = %email, "bootstrap admin is present");
                }
                verifier_source = Some(user.key_ring());
                tasks.spawn(relay(user.outbox_relay(bus.clone()), shutdown.clone()));
                server_parts.push(ServerPart::User(user.clone()));
                user_module = Some(user);
            }
            let caches = if runs_course || runs_content {
                let caches = CacheHub::connect(config.cache_settings())
                    .await
                    .context("connecting to Redis (DUOVARSITY_REDIS_URL)")?;
                server_parts.push(ServerPart::Caches(caches.clone()));
                Some(caches)
            } else {
                None
            };
            if let (true, Some(caches)) = (runs_course, &caches) {
                let course = Arc::new(
                    CourseModule::open(&config, caches)
                        .await
                        .context("starting the course service")?,
                );
                tasks.spawn(relay(course.outbox_relay(bus.clone()), shutdown.clone()));
                server_parts.push(ServerPart::Course(course.clone()));
                course_module = Some(course);
            }
            if let (true, Some(caches)) = (runs_content, &caches) {
                let content = Arc::new(
                    ContentModule::open(&config, caches)
                        .await
                        .context("starting the content service")?,
                );
                server_parts.push(ServerPart::Content(content.clone()));
                content_module = Some(content);
            }
            if runs_notification {
                let notification = Arc::new(
                    NotificationModule::open(&config)
                        .await
                        .context("starting the notification service")?,
                );
                for worker in notification.spawn_workers(bus.clone(), shutdown.clone()) {
                    tasks.spawn(async move { worker.await.context("notification worker") });
                }
                server_parts.push(ServerPart::Notification(notification.clone()));
                notification_module = Some(notification);
            }
            let source = match verifier_source {
                Some(source) => source,
                None => Arc::new(
                    duovarsity_common::auth::RemoteJwks::connect(&config.service_urls("user"))
                        .context("DUOVARSITY_USER_SERVICE_URL")?,
                ),
            };
            let verifier = Arc::new(TokenVerifier::new(source, Duration::from_secs(10)));
            let mut server = GrpcServer::new(AuthLayer::new(verifier));
            for part in server_parts {
                server = match part {
                    ServerPart::User(user) => {
                        server.add_service(user.grpc_service()).probe(user.probe())
                    }
                    ServerPart::Course(course) => server
                        .add_service(course.grpc_service())
                        .probe(course.probe()),
                    ServerPart::Content(content) => server
                        .add_service(content.grpc_service())
                        .probe(content.probe()),
                    ServerPart::Notification(notification) => server
                        .add_service(notification.grpc_service())
                        .probe(notification.probe()),
                    // The hub lives as long as its probe: the server's lifetime.
                    ServerPart::Caches(hub) => server.probe(Arc::new(move || {
                        let hub = hub.clone();
                        Box::pin(async move { hub.ping().await })
                    })),
                };
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
            let gateway = Gateway::new(&config).context("starting the gateway")?;
            let listener = TcpListener::bind(config.http_addr).await.with_context(|| {
                format!(
                    "binding HTTP on {} (DUOVARSITY_HTTP_ADDR)",
                    config.http_addr
                )
            })?;
            http_addr = Some(listener.local_addr()?);
            let router = gateway.router(&config.cors_allowed_origins);
            let closing = shutdown.clone();
            let live = gateway.clone();
            tasks.spawn(async move {
                closing.cancelled().await;
                live.close_live_connections();
                Ok(())
            });
            let stop = shutdown.clone();
            tasks.spawn(async move {
                duovarsity_gateway::run(listener, router, stop, grace)
                    .await
                    .context("HTTP server")
            });
        }

        Ok(Self {
            http_addr,
            grpc_addr,
            shutdown,
            tasks,
            user: user_module,
            course: course_module,
            content: content_module,
            notification: notification_module,
            bus,
        })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// The event bus the services publish to.
    pub fn bus(&self) -> Arc<dyn EventBus> {
        self.bus.clone()
    }

    /// Cancelling this token stops the platform.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until a server stops by itself (an error) or shutdown is requested, then
    /// drains everything.
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
        if let Some(user) = &self.user {
            user.close().await;
        }
        if let Some(course) = &self.course {
            course.close().await;
        }
        if let Some(content) = &self.content {
            content.close().await;
        }
        if let Some(notification) = &self.notification {
            notification.close().await;
        }
        result
    }

    /// Requests shutdown and waits for the drain.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Runs an outbox relay until shutdown.
async fn relay(relay: OutboxRelay, shutdown: CancellationToken) -> anyhow::Result<()> {
    relay.run(shutdown).await;
    Ok(())
}

/// What one gRPC server hosts.
enum ServerPart {
    User(Arc<UserModule>),
    Course(Arc<CourseModule>),
    Content(Arc<ContentModule>),
    Notification(Arc<NotificationModule>),
    Caches(CacheHub),
}

/// Applies every service's migrations to the configured database(s).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let user = UserModule::open(config)
        .await
        .context("migrating the user service")?;
    user.close().await;
    Ok(())
}

/// Creates an account with a role on the configured database.
pub async fn create_user(
    config: &Config,
    email: &str,
    password: &str,
    display_name: &str,
    role: Role,
) -> anyhow::Result<duovarsity_proto::user::User> {
    let user = UserModule::open(config)
        .await
        .context("opening the user service")?;
    let created = user
        .users()
        .create_account(email, password, display_name, role, false)
        .await;
    user.close().await;
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
