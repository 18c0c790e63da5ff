//! Test-only helpers: start the real platform in-process on port 0 with a throwaway data
//! directory, and create throwaway PostgreSQL databases.
//!
//! PostgreSQL tests read the server URL from `DUOVARSITY_TEST_POSTGRES_URL` (the test
//! command's setup script starts a local server and exports it). Without it they fail with
//! a message saying how to get one, rather than silently passing.
#![forbid(unsafe_code)]

mod api;
mod backends;
pub mod kube;
pub mod llm;
pub mod razorpay;
mod servers;
mod sockets;
pub mod stripe;

pub use api::Api;
pub use backends::*;
pub use servers::{PrivatePostgres, PrivateRedis};
pub use sockets::*;

/// An HTTP server of a test's own (a provider mock) on a free port of 127.0.0.1, stopped
/// when dropped.
pub struct MockServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    pub async fn serve(router: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the mock serves");
        });
        Self { addr, task }
    }

    /// The base URL to configure (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use duovarsity::{Component, Platform};
use duovarsity_config::Config;
use sqlx::Executor;
use sqlx::postgres::PgPoolOptions;
use tempfile::TempDir;

/// The bootstrap admin of [`TestPlatform::start_with_admin`] (password [`TEST_PASSWORD`]).
pub const TEST_ADMIN: &str = "admin@example.com";

/// The password of accounts made by [`TestPlatform::sign_up`].
pub const TEST_PASSWORD: &str = "correct-horse-battery";

/// The variable naming a PostgreSQL server for tests (a URL to any existing database).
pub const POSTGRES_URL_VAR: &str = "DUOVARSITY_TEST_POSTGRES_URL";

/// A platform running in this test process. It derefs to the [`Api`] of its gateway.
pub struct TestPlatform {
    platform: Option<Platform>,
    http: Option<SocketAddr>,
    grpc: Option<SocketAddr>,
    data_dir: TempDir,
    api: Api,
}

impl std::ops::Deref for TestPlatform {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestPlatform {
    /// Every service and the gateway, on SQLite in a temporary directory.
    pub async fn start() -> Self {
        Self::start_with(Component::All, &[]).await
    }

    /// `component` with extra `DUOVARSITY_*` settings.
    pub async fn start_with(component: Component, settings: &[(&str, &str)]) -> Self {
        // Server logs go to the test's captured output (shown when it fails).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let data_dir = tempfile::tempdir().expect("a temporary directory");
        let mut env: BTreeMap<String, String> = BTreeMap::from([
            (
                "DUOVARSITY_DATA_DIR".into(),
                data_dir.path().display().to_string(),
            ),
            ("DUOVARSITY_HTTP_ADDR".into(), "127.0.0.1:0".into()),
            ("DUOVARSITY_GRPC_ADDR".into(), "127.0.0.1:0".into()),
            ("DUOVARSITY_ADMIN_ADDR".into(), "127.0.0.1:0".into()),
            ("DUOVARSITY_SHUTDOWN_GRACE_SECS".into(), "5".into()),
            // Tests send many calls from one address and share one Redis server: the
            // tests of rate limits turn them on with keys of their own.
            ("DUOVARSITY_RATE_LIMITS_ENABLED".into(), "false".into()),
            // Debug builds on a busy test machine lag past any sensible shedding threshold;
            // the governor has tests of its own (gateway::lag) and a benchmark
            // (scripts/bench-ai.sh).
            ("DUOVARSITY_SHED_LAG_MS".into(), "0".into()),
        ]);
        for (key, value) in settings {
            env.insert((*key).to_string(), (*value).to_string());
        }
        let config = Config::from_sources(None, &env).expect("test configuration is valid");
        let platform = Platform::start(config, component)
            .await
            .expect("the platform starts");
        let http = platform.http_addr();
        let admin = format!("http://{}", platform.admin_addr());
        let started = Self {
            http,
            grpc: platform.grpc_addr(),
            platform: Some(platform),
            data_dir,
            api: Api::new(&http.map_or_else(String::new, |addr| format!("http://{addr}")))
                .with_admin(&admin),
        };
        started.wait_until_ready().await;
        started
    }

    /// `component` with the bootstrap admin [`TEST_ADMIN`] and `extra` settings.
    pub async fn start_with_admin(component: Component, extra: &[(&str, &str)]) -> Self {
        let mut settings = vec![
            ("DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL", TEST_ADMIN),
            ("DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD", TEST_PASSWORD),
        ];
        settings.extend_from_slice(extra);
        Self::start_with(component, &settings).await
    }

    /// The whole platform (with the bootstrap admin) on `database` and `redis`, and a
    /// second gateway beside it that calls its `services` (configuration names) and
    /// follows its cache invalidations through the same Redis.
    pub async fn with_second_gateway(
        database: &str,
        redis: &str,
        services: &[&str],
    ) -> (Self, Self) {
        let platform = Self::start_with_admin(
            Component::All,
            &[
                ("DUOVARSITY_DATABASE_URL", database),
                ("DUOVARSITY_REDIS_URL", redis),
            ],
        )
        .await;
        let grpc = format!("http://{}", platform.grpc_addr());
        let variables: Vec<String> = services
            .iter()
            .map(|name| {
                format!(
                    "DUOVARSITY_{}_SERVICE_URL",
                    name.to_uppercase().replace('-', "_")
                )
            })
            .collect();
        let mut settings: Vec<(&str, &str)> = variables
            .iter()
            .map(|v| (v.as_str(), grpc.as_str()))
            .collect();
        settings.push(("DUOVARSITY_REDIS_URL", redis));
        let gateway = Self::start_with(Component::Gateway, &settings).await;
        (platform, gateway)
    }

    async fn wait_until_ready(&self) {
        let Some(http) = self.http else {
            return;
        };
        for _ in 0..100 {
            if let Ok(response) = self
                .client
                .get(format!("http://{http}/readyz"))
                .send()
                .await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the platform did not become ready within 5 s");
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.expect("this platform runs gRPC services")
    }

    /// The platform's event bus (subscribe to see what services publish).
    pub fn bus(&self) -> std::sync::Arc<dyn duovarsity_common::events::EventBus> {
        self.platform
            .as_ref()
            .expect("the platform runs")
            .bus()
            .expect("the platform runs services")
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Stops and drains, failing the test if a server failed.
    pub async fn stop(mut self) {
        if let Some(platform) = self.platform.take() {
            platform.stop().await.expect("the platform stops cleanly");
        }
    }
}
