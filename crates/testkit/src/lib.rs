//! Test-only helpers: start the real platform in-process on port 0 with a throwaway data
//! directory, and create throwaway PostgreSQL databases.
//!
//! PostgreSQL tests read the server URL from `DUOVARSITY_TEST_POSTGRES_URL` (the test
//! command's setup script starts a local server and exports it). Without it they fail with
//! a message saying how to get one, rather than silently passing.
#![forbid(unsafe_code)]

pub mod kube;
pub mod llm;
pub mod razorpay;
mod servers;
pub mod stripe;

pub use servers::{PrivatePostgres, PrivateRedis};

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

/// A client of one gateway's REST API (in this process or another).
pub struct Api {
    base: String,
    /// The process's admin listener (`/metrics`, `/status`), when known.
    admin: Option<String>,
    pub client: reqwest::Client,
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

impl Api {
    /// A client of the gateway at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        Self {
            base: base.trim_end_matches('/').to_string(),
            admin: None,
            client,
        }
    }

    /// The same client, knowing the process's admin listener at `admin`.
    pub fn with_admin(mut self, admin: &str) -> Self {
        self.admin = Some(admin.trim_end_matches('/').to_string());
        self
    }

    /// The admin listener's base URL + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self
            .admin
            .as_ref()
            .expect("this client knows no admin listener");
        format!("{admin}{path}")
    }

    /// A GET of the admin listener's `path`: the status and the parsed body.
    pub async fn admin(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let response = self
            .client
            .get(self.admin_url(path))
            .send()
            .await
            .expect("the admin listener answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The gateway's base URL + `path`.
    pub fn url(&self, path: &str) -> String {
        assert!(!self.base.is_empty(), "this platform runs no gateway");
        format!("{}{path}", self.base)
    }

    /// The process's `/metrics` (Prometheus text), from its admin listener.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics has a body")
    }

    /// One JSON call through the gateway: the status and the parsed body (Null if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        self.call_with(method, path, token, &[], body).await
    }

    /// [`Self::call`] with extra request headers (`Idempotency-Key`, ...).
    pub async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Registers and signs in `email`; returns (user id, access token).
    pub async fn sign_up(&self, email: &str) -> (String, String) {
        let body =
            serde_json::json!({"email": email, "password": TEST_PASSWORD, "displayName": email});
        let (status, created) = self
            .call(reqwest::Method::POST, "/v1/auth/register", None, Some(body))
            .await;
        assert!(status.is_success(), "register {email}: {created}");
        self.sign_in(email).await
    }

    /// Puts `user_id` in `tier` (`TIER_PREMIUM`, `TIER_THROTTLED`, ...) as the bootstrap
    /// admin [`TEST_ADMIN`]; the user as it is now. Tokens issued afterwards carry it.
    pub async fn set_tier(&self, user_id: &str, tier: &str) -> serde_json::Value {
        let (_, admin) = self.sign_in(TEST_ADMIN).await;
        let (status, user) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/users/{user_id}:setTier"),
                Some(&admin),
                Some(serde_json::json!({ "tier": tier })),
            )
            .await;
        assert!(status.is_success(), "set tier {tier}: {user}");
        user
    }

    /// Signs in `email` (password [`TEST_PASSWORD`]); returns (user id, access token).
    pub async fn sign_in(&self, email: &str) -> (String, String) {
        let body = serde_json::json!({"email": email, "password": TEST_PASSWORD});
        let (status, tokens) = self
            .call(reqwest::Method::POST, "/v1/auth/login", None, Some(body))
            .await;
        assert!(status.is_success(), "login {email}: {tokens}");
        (
            tokens["user"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            tokens["accessToken"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }

    /// A draft course (`slug`) owned by the holder of `token`, with one section and one
    /// required text lesson; returns (course id, lesson id).
    pub async fn course_with_lesson(&self, token: &str, slug: &str) -> (String, String) {
        use reqwest::Method;
        let course = serde_json::json!({"slug": slug, "title": slug, "level": "LEVEL_BEGINNER", "language": "en"});
        let (status, course) = self
            .call(Method::POST, "/v1/courses", Some(token), Some(course))
            .await;
        assert!(status.is_success(), "create course: {course}");
        let course_id = course["id"].as_str().unwrap_or_default().to_string();
        let (status, section) = self
            .call(
                Method::POST,
                &format!("/v1/courses/{course_id}/sections"),
                Some(token),
                Some(serde_json::json!({"title": "S"})),
            )
            .await;
        assert!(status.is_success(), "create section: {section}");
        let lesson =
            serde_json::json!({"title": "L", "kind": "LESSON_KIND_TEXT", "required": true});
        let section_id = section["id"].as_str().unwrap_or_default();
        let (status, lesson) = self
            .call(
                Method::POST,
                &format!("/v1/sections/{section_id}/lessons"),
                Some(token),
                Some(lesson),
            )
            .await;
        assert!(status.is_success(), "create lesson: {lesson}");
        (
            course_id,
            lesson["id"].as_str().unwrap_or_default().to_string(),
        )
    }

    /// A published course priced `price_minor` of `currency`, owned by the holder of
    /// `token`, whose one lesson has published content; returns (course id, lesson id).
    pub async fn paid_course_with_lesson(
        &self,
        token: &str,
        slug: &str,
        price_minor: i64,
        currency: &str,
    ) -> (String, String) {
        use reqwest::Method;
        let (course_id, lesson_id) = self.course_with_lesson(token, slug).await;
        let price =
            serde_json::json!({"price": {"currency": currency, "amountMinor": price_minor}});
        let steps = [
            (Method::PATCH, format!("/v1/courses/{course_id}"), price),
            (
                Method::PUT,
                format!("/v1/lessons/{lesson_id}/draft"),
                serde_json::json!({"markdown": format!("# {slug}\n\nWhat the price pays for.")}),
            ),
            (
                Method::POST,
                format!("/v1/lessons/{lesson_id}/content:publish"),
                serde_json::json!({}),
            ),
        ];
        for (method, path, body) in steps {
            let (status, answer) = self.call(method, &path, Some(token), Some(body)).await;
            assert!(status.is_success(), "{path}: {answer}");
        }
        self.publish(token, &course_id).await;
        (course_id, lesson_id)
    }

    /// Publishes a course as the holder of `token`, failing the test otherwise.
    pub async fn publish(&self, token: &str, course_id: &str) {
        let path = format!("/v1/courses/{course_id}:publish");
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &path,
                Some(token),
                Some(serde_json::json!({})),
            )
            .await;
        assert!(status.is_success(), "publish {course_id}: {body}");
    }

    /// Enrolls the holder of `token` in a course; returns the enrollment.
    pub async fn enroll(&self, token: &str, course_id: &str) -> serde_json::Value {
        let path = format!("/v1/courses/{course_id}/enrollments");
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &path,
                Some(token),
                Some(serde_json::json!({})),
            )
            .await;
        assert!(status.is_success(), "enroll in {course_id}: {body}");
        body
    }
}

/// A live notification socket (`GET /v1/ws`) of a test client.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl TestPlatform {
    /// The `ws://` URL of the live endpoint with `query` (for example
    /// `access_token=…&after=3`).
    pub fn live_url(&self, query: &str) -> String {
        self.url(&format!("/v1/ws?{query}"))
            .replacen("http://", "ws://", 1)
    }

    /// Opens the live socket of the user holding `token`, resuming after sequence `after`.
    pub async fn live(&self, token: &str, after: i64) -> Socket {
        tokio_tungstenite::connect_async(
            self.live_url(&format!("access_token={token}&after={after}")),
        )
        .await
        .expect("the upgrade succeeds")
        .0
    }

    /// How many live connections `user_id` has, as `GET /v1/users/{id}/presence` says to
    /// the holder of `token`.
    pub async fn connections(&self, token: &str, user_id: &str) -> i64 {
        let (status, presence) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/users/{user_id}/presence"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{presence}");
        presence["connections"]
            .as_i64()
            .expect("a connection count")
    }

    /// Waits until `user_id` has `expected` live connections, failing with `why` after
    /// `within`.
    pub async fn wait_for_connections(
        &self,
        token: &str,
        user_id: &str,
        expected: i64,
        within: Duration,
        why: &str,
    ) {
        let started = std::time::Instant::now();
        while self.connections(token, user_id).await != expected {
            assert!(started.elapsed() < within, "{why}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Connects to `url` expecting the upgrade to be refused; the HTTP status and body.
pub async fn refused(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Ok(_) => panic!("{url}: the upgrade was accepted"),
        Err(other) => panic!("{url}: expected an HTTP refusal, got {other}"),
    }
}

/// The next JSON text frame of `socket` within `wait`, or None.
pub async fn next_frame(socket: &mut Socket, wait: Duration) -> Option<serde_json::Value> {
    use futures::StreamExt as _;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()??
            .ok()?;
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return Some(serde_json::from_str(&text).expect("frames are JSON"));
        }
    }
}

/// The Redis server for tests (`DUOVARSITY_TEST_REDIS_URL`, exported by the test setup).
pub fn redis_url() -> String {
    std::env::var("DUOVARSITY_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "DUOVARSITY_TEST_REDIS_URL is not set: run the tests with `make test` (which starts \
             Redis through scripts/test-services.sh) or export it yourself"
        )
    })
}

/// The Kafka-protocol broker for tests (`DUOVARSITY_TEST_KAFKA_BROKERS`, exported by the
/// test setup, which runs tansu).
pub fn kafka_brokers() -> String {
    std::env::var("DUOVARSITY_TEST_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!(
            "DUOVARSITY_TEST_KAFKA_BROKERS is not set: run the tests with `make test` (which \
             starts a broker through scripts/test-services.sh) or export it yourself"
        )
    })
}

/// A Kafka bus on a fresh librdkafka mock cluster (an in-process Kafka-protocol cluster)
/// with `topics` made, `partitions` each. The mock does not answer CreateTopics, so the bus
/// finds them in its metadata. Keep the cluster alive as long as the bus.
pub fn mock_kafka(
    topics: &[&str],
    partitions: i32,
) -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    duovarsity_common::events::kafka::KafkaBus,
) {
    use duovarsity_common::events::kafka::{KafkaBus, KafkaSettings};
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("a mock Kafka cluster");
    for topic in topics {
        cluster
            .create_topic(topic, partitions, 1)
            .expect("a mock topic");
    }
    let mut settings = KafkaSettings::new(cluster.bootstrap_servers());
    settings.partitions = partitions;
    // The mock group waits most of a session timeout for members to rejoin.
    settings.session_timeout = Duration::from_secs(4);
    let bus = KafkaBus::connect(settings).expect("a Kafka bus on the mock cluster");
    (cluster, bus)
}

/// Two tests, `on_sqlite` and `on_postgres`, that each run `$suite` (an async function of
/// a database URL) on a fresh database of their backend: a store's one suite for both.
#[macro_export]
macro_rules! on_sqlite_and_postgres {
    ($suite:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn on_sqlite() {
            let database = $crate::TempSqlite::create();
            ($suite)(database.url.clone()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn on_postgres() {
            let database = $crate::TempPostgres::create().await;
            ($suite)(database.url.clone()).await;
            database.drop_database().await;
        }
    };
}

/// An SQLite database file of one test, in a directory removed when this is dropped.
pub struct TempSqlite {
    _dir: tempfile::TempDir,
    pub url: String,
}

impl TempSqlite {
    /// A new, empty database (created on first connection).
    pub fn create() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        Self { _dir: dir, url }
    }
}

/// A database created for one test and dropped by [`TempPostgres::drop_database`].
pub struct TempPostgres {
    admin_url: String,
    name: String,
    pub url: String,
}

impl TempPostgres {
    /// Creates `dv_test_<uuid>` on the server named by `DUOVARSITY_TEST_POSTGRES_URL`.
    pub async fn create() -> Self {
        let admin_url = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{POSTGRES_URL_VAR} is not set: run the tests with `make test` (which starts \
                 PostgreSQL through scripts/test-services.sh) or export it yourself"
            )
        });
        let name = format!("dv_test_{}", uuid::Uuid::now_v7().simple());
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {POSTGRES_URL_VAR}: {e}"));
        pool.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("CREATE DATABASE");
        pool.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&admin_url);
        Self {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }

    pub async fn drop_database(self) {
        if let Ok(pool) = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.admin_url)
            .await
        {
            let _ = pool
                .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
                .await;
            pool.close().await;
        }
    }
}

/// An embedded event bus in a temporary directory, removed with the returned guard.
pub async fn embedded_bus(
    partitions: u32,
) -> (
    duovarsity_common::events::embedded::EmbeddedBus,
    tempfile::TempDir,
) {
    use duovarsity_common::events::embedded::{EmbeddedBus, EmbeddedSettings};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = EmbeddedSettings {
        partitions,
        ..EmbeddedSettings::default()
    };
    let bus = EmbeddedBus::open(&dir.path().join("bus.db"), settings)
        .await
        .expect("an embedded bus");
    (bus, dir)
}
