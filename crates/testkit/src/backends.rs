//! Backends of tests: Redis and Kafka from the test command's setup, a mock Kafka cluster,
//! throwaway SQLite files and PostgreSQL databases, an embedded bus.

use super::*;

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
