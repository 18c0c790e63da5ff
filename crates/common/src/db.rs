//! SQL storage through sqlx's `Any` driver, so one store implementation serves SQLite (the
//! embedded default) and PostgreSQL (production), chosen by URL at run time.
//!
//! Invariants:
//! - Writes go to [`Database::writer`]; reads that tolerate replica lag go to
//!   [`Database::reader`] (the replica when one is configured, else the primary).
//! - On SQLite the writer pool has exactly one connection: SQLite admits one writer at a
//!   time, and queueing writers in the pool (with a bounded acquire timeout) is faster and
//!   clearer than `SQLITE_BUSY` retries. Readers use their own pool; WAL lets them run
//!   beside the writer.
//! - Every query and transaction on either pool passes [`admission`]: a bounded queue of
//!   waiters per pool, so overload is refused at once (503 `OVERLOADED`) rather than
//!   discovered by an acquire timeout.
//! - Schema lives in per-backend migration folders of each service, applied at start with
//!   `ignore_missing`, so several services may share one PostgreSQL database when their
//!   migration versions do not collide (each service owns a version range).
//! - Portable column types only: TEXT ids (UUIDv7), BIGINT unix milliseconds, BOOLEAN.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

pub mod admission;
mod errors;

pub use admission::Pool;

/// Which SQL engine a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// A service's schema, once per backend: its own migration folders (`sqlx::migrate!`) plus
/// tables every service defines the same way (the outbox and applied-events tables of
/// [`crate::events::schema`]).
#[derive(Default)]
pub struct Migrations {
    sqlite: Vec<Migration>,
    postgres: Vec<Migration>,
}

impl Migrations {
    pub fn new(sqlite: Migrator, postgres: Migrator) -> Self {
        Self {
            sqlite: sqlite.iter().cloned().collect(),
            postgres: postgres.iter().cloned().collect(),
        }
    }

    /// Migrations whose SQL serves both backends: one directory of portable SQL (the
    /// services' schemas are written so), checked in once.
    pub fn portable(migrator: Migrator) -> Self {
        let all: Vec<Migration> = migrator.iter().cloned().collect();
        Self {
            sqlite: all.clone(),
            postgres: all,
        }
    }

    /// Adds one migration, written per backend by `sql`, at `version`.
    pub fn with(
        mut self,
        version: i64,
        description: &str,
        sql: impl Fn(Backend) -> String,
    ) -> Self {
        for (backend, list) in [
            (Backend::Sqlite, &mut self.sqlite),
            (Backend::Postgres, &mut self.postgres),
        ] {
            list.push(Migration::new(
                version,
                Cow::Owned(description.to_string()),
                MigrationType::Simple,
                Cow::Owned(sql(backend)),
                false,
            ));
            list.sort_by_key(|m| m.version);
        }
        self
    }

    fn for_backend(&self, backend: Backend) -> &[Migration] {
        match backend {
            Backend::Sqlite => &self.sqlite,
            Backend::Postgres => &self.postgres,
        }
    }
}

/// Hands a list of migrations to sqlx's [`Migrator`].
#[derive(Debug)]
struct MigrationList(Vec<Migration>);

impl MigrationSource<'static> for MigrationList {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}

/// The connection pools of one service.
#[derive(Clone)]
pub struct Database {
    backend: Backend,
    writer: Pool,
    reader: Pool,
}

/// How long a request waits for a pooled connection before failing with UNAVAILABLE. On
/// SQLite that is the queue for its one writer, which a burst of writes may fill for a
/// while. On PostgreSQL it is also how long a request waits while the server is down (the
/// pool keeps trying to connect until then), so it is short: the request fails fast with
/// 503 and Retry-After, and the pool reconnects once the server is back.
const SQLITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// A service's database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Connect(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] MigrateError),
    #[error(
        "the {service} schema lacks migrations {missing:?}; run `duovarsity migrate` \
         (DUOVARSITY_MIGRATE_ON_START is false)"
    )]
    NotMigrated {
        service: String,
        missing: Vec<String>,
    },
}

/// Where one service's database is and how its pools are sized; the configuration
/// assembles it (`Config::database`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The service whose database this is (its migrations are named in errors).
    pub service: String,
    /// `sqlite://…` or `postgres://…`.
    pub url: String,
    /// A read replica for reads that tolerate staleness; `None`: the primary.
    pub replica_url: Option<String>,
    /// Connections per pool.
    pub max_connections: u32,
    /// Apply pending migrations at open; otherwise refuse a schema that lacks them.
    pub migrate_on_start: bool,
}

impl Database {
    /// Connects a service's database as `settings` say and applies its pending migrations,
    /// or, with `migrate_on_start` off, checks that every one of them has been applied (by
    /// `duovarsity migrate`).
    pub async fn open(settings: &Settings, migrations: Migrations) -> Result<Self, OpenError> {
        let db = Self::connect_service(settings).await?;
        if settings.migrate_on_start {
            db.migrate(&migrations).await?;
        } else {
            let missing = db.pending(&migrations).await?;
            if !missing.is_empty() {
                return Err(OpenError::NotMigrated {
                    service: settings.service.clone(),
                    missing,
                });
            }
        }
        Ok(db)
    }

    /// Connects a service's database as `settings` say, without touching its schema.
    pub async fn connect_service(settings: &Settings) -> Result<Self, sqlx::Error> {
        Self::connect(
            &settings.url,
            settings.replica_url.as_deref(),
            settings.max_connections,
        )
        .await
    }

    /// The migrations of `migrations` (for this backend) not yet applied, as
    /// `<version>_<description>`.
    pub async fn pending(&self, migrations: &Migrations) -> Result<Vec<String>, sqlx::Error> {
        let applied = self.applied_versions().await?;
        Ok(migrations
            .for_backend(self.backend)
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .map(|m| format!("{}_{}", m.version, m.description.replace(' ', "_")))
            .collect())
    }

    /// Applies pending migrations and says which ones it applied (empty: up to date).
    pub async fn migrate_reporting(
        &self,
        migrations: &Migrations,
    ) -> Result<Vec<String>, OpenError> {
        let pending = self.pending(migrations).await?;
        self.migrate(migrations).await?;
        Ok(pending)
    }

    /// Versions recorded in sqlx's bookkeeping table (none when it does not exist yet).
    async fn applied_versions(&self) -> Result<Vec<i64>, sqlx::Error> {
        let exists: bool = match self.backend {
            Backend::Sqlite => sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_one(&self.writer)
            .await?
                > 0,
            Backend::Postgres => sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
            )
            .fetch_one(&self.writer)
            .await?
                > 0,
        };
        if !exists {
            return Ok(Vec::new());
        }
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_all(&self.writer)
            .await
    }

    /// A readiness probe that passes while both pools answer.
    pub fn probe(&self, service: &'static str) -> crate::health::Probe {
        let db = self.clone();
        std::sync::Arc::new(move || {
            let db = db.clone();
            Box::pin(async move {
                db.ping()
                    .await
                    .map_err(|e| format!("{service} database: {e}"))
            })
        })
    }

    /// Opens the primary (and the replica, if any). SQLite files and their folders are
    /// created when missing.
    pub async fn connect(
        url: &str,
        replica_url: Option<&str>,
        max_connections: u32,
    ) -> Result<Self, sqlx::Error> {
        install_default_drivers();
        let backend = Backend::from_url(url).ok_or_else(|| {
            sqlx::Error::Configuration(format!("unsupported database URL scheme in {url:?}").into())
        })?;
        match backend {
            Backend::Sqlite => {
                create_sqlite_parent_dir(url)?;
                let writer = Pool::new(sqlite_pool(url, 1).await?, "writer");
                let reader = Pool::new(sqlite_pool(url, max_connections).await?, "reader");
                Ok(Self {
                    backend,
                    writer,
                    reader,
                })
            }
            Backend::Postgres => {
                let writer = Pool::new(postgres_pool(url, max_connections).await?, "writer");
                // Without a replica both names are one pool, with one queue.
                let reader = match replica_url {
                    Some(replica) => {
                        Pool::new(postgres_pool(replica, max_connections).await?, "reader")
                    }
                    None => writer.clone(),
                };
                Ok(Self {
                    backend,
                    writer,
                    reader,
                })
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The primary: every write, and reads that must see the caller's own writes.
    pub fn writer(&self) -> &Pool {
        &self.writer
    }

    /// A replica when configured: reads that tolerate a little staleness.
    pub fn reader(&self) -> &Pool {
        &self.reader
    }

    /// Applies the service's pending migrations for this backend.
    pub async fn migrate(&self, migrations: &Migrations) -> Result<(), MigrateError> {
        let mut migrator =
            Migrator::new(MigrationList(migrations.for_backend(self.backend).to_vec())).await?;
        migrator.set_ignore_missing(true);
        migrator.run(self.writer.inner()).await
    }

    /// Answers when both pools can run a query (readiness).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        // The pools themselves: readiness must not fail because the queue is busy.
        self.writer.inner().execute("SELECT 1").await?;
        self.reader.inner().execute("SELECT 1").await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.inner().close().await;
        self.reader.inner().close().await;
    }
}

async fn sqlite_pool(url: &str, max_connections: u32) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(SQLITE_ACQUIRE_TIMEOUT)
        .after_connect(|connection, _meta| {
            Box::pin(async move {
                connection
                    .execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                Ok(())
            })
        })
        .connect(url)
        .await
}

async fn postgres_pool(url: &str, max_connections: u32) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
        .connect(url)
        .await
}

fn create_sqlite_parent_dir(url: &str) -> Result<(), sqlx::Error> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    Ok(())
}
